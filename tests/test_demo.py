"""ctadeface.demo: the demo dataset is a valid BIDS dataset whose CTs discovery finds."""

from __future__ import annotations

from ctadeface.demo import SHARED_HEADS, build_dataset
from ctadeface.discover import find_scans
from tests import SHARED_DATA

SHARED = SHARED_DATA


def test_demo_dataset_holds_phantoms_and_linked_shared_heads(tmp_path):
    shared = SHARED if SHARED.is_dir() else None
    files = build_dataset(tmp_path / "bids", n_phantoms=1, shared_dir=shared)
    scans = find_scans(tmp_path / "bids")
    assert sorted(s.relpath for s in scans) == sorted(files)
    assert files[0].startswith("sub-phantom01/anat/")
    expected_heads = [h for h in SHARED_HEADS.values() if shared and (shared / h).is_file()]
    assert len(files) == 1 + len(expected_heads)
    for scan in scans:
        assert "PatientName" not in scan.metadata or scan.subject.startswith("phantom")
        assert scan.path.is_symlink() == (not scan.subject.startswith("phantom"))
