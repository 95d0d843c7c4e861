"""ctadeface.participant: the per-scan loop, with a stand-in segmenter (the real model is
exercised end to end in test_cli.py)."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ctadeface import participant
from ctadeface.discover import find_scans
from ctadeface.errors import ModelError
from ctadeface.outputs import output_paths, read_provenance
from ctadeface.provenance import ModelRecord
from ctadeface.settings import Settings
from ctadeface.status import Status
from tests import records
from tests.bidsfixture import CT_RELPATHS, make_bids_dataset


class ThresholdSegmenter:
    """Marks every voxel above 0 HU; counts its calls."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls = 0
        self.fail_on = fail_on

    def predict(
        self,
        volume: np.ndarray,
        spacing: tuple[float, float, float],
        *,
        slope=1.0,
        inter=0.0,
        affine=None,
    ) -> np.ndarray:
        self.calls += 1
        if self.fail_on is not None and self.calls == 2:
            raise RuntimeError("library blew up")
        return volume * slope + inter > 0

    def describe(self) -> ModelRecord:
        return dataclasses.replace(records.model(), model="threshold", inference="> 0 HU")

    def versions(self) -> dict[str, str]:
        return {"torch": "x", "nnunetv2": "y"}


def run(settings, scans, make_segmenter, **kwargs):
    """participant.run with the stand-in's strategy name."""
    return participant.run(settings, scans, make_segmenter, inference="threshold", **kwargs)


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def dataset(tmp_path):
    bids = make_bids_dataset(tmp_path / "bids")
    settings = Settings(bids_dir=bids, output_dir=tmp_path / "out", analysis_level="participant")
    return settings, find_scans(bids)


def test_defaces_every_scan_and_leaves_raw_untouched(dataset):
    settings, scans = dataset
    raw_before = _tree(settings.bids_dir)
    seg = ThresholdSegmenter()
    results = run(settings, scans, lambda: seg)
    assert [r.status for r in results] == [Status.DEFACED] * 3
    assert _tree(settings.bids_dir) == raw_before
    for rel in CT_RELPATHS:
        src = nib.load(str(settings.bids_dir / rel))
        scan = next(s for s in scans if s.relpath == rel)
        paths = output_paths(settings.output_dir, scan)
        out = nib.load(str(paths.defaced))
        mask = np.asanyarray(nib.load(str(paths.mask)).dataobj).astype(bool)
        a, b = np.asanyarray(src.dataobj), np.asanyarray(out.dataobj)
        np.testing.assert_array_equal(a[~mask], b[~mask])
        np.testing.assert_array_equal(mask, a > 0)
        assert out.header.binaryblock == src.header.binaryblock


def test_rerun_skips_without_loading_the_model_and_overwrite_redoes(dataset):
    settings, scans = dataset
    run(settings, scans, ThresholdSegmenter)
    before = _tree(settings.output_dir)

    def must_not_load():
        raise AssertionError("the model was loaded for up-to-date outputs")

    results = run(settings, scans, must_not_load)
    assert [r.status for r in results] == [Status.SKIPPED] * 3
    assert _tree(settings.output_dir) == before
    seg = ThresholdSegmenter()
    again = run(dataclasses.replace(settings, overwrite=True), scans, lambda: seg)
    assert [r.status for r in again] == [Status.DEFACED] * 3 and seg.calls == 3


def test_one_bad_scan_does_not_stop_the_others(dataset):
    settings, scans = dataset
    broken = dataclasses.replace(scans[0], problem=f"{scans[0].path}: sidecar is not valid JSON")
    results = run(settings, [broken, *scans[1:]], ThresholdSegmenter)
    assert [r.status for r in results] == [Status.FAILED, Status.DEFACED, Status.DEFACED]
    assert "sidecar is not valid JSON" in results[0].message

    seg = ThresholdSegmenter(fail_on="second")
    results = run(dataclasses.replace(settings, overwrite=True), scans, lambda: seg)
    assert [r.status for r in results] == [Status.DEFACED, Status.FAILED, Status.DEFACED]
    assert "RuntimeError" in results[1].message and str(scans[1].path) in results[1].message


def test_dry_run_writes_nothing(dataset):
    settings, scans = dataset
    results = run(dataclasses.replace(settings, dry_run=True), scans, ThresholdSegmenter)
    assert [r.status for r in results] == [Status.PLANNED] * 3
    assert not settings.output_dir.exists()


def test_model_errors_end_the_run(dataset):
    settings, scans = dataset

    def missing():
        raise ModelError("model 'x' is not installed")

    with pytest.raises(ModelError):
        run(settings, scans, missing)


def test_shared_files_are_written_once(dataset):
    settings, scans = dataset
    run(settings, scans[:1], ThresholdSegmenter)
    desc = settings.output_dir / "dataset_description.json"
    first = desc.read_bytes()
    run(dataclasses.replace(settings, overwrite=True), scans, ThresholdSegmenter)
    assert desc.read_bytes() == first
    assert (settings.output_dir / "logs" / "CITATION.md").is_file()


class FlagSecond:
    """A stand-in verifier: the second scan still 'shows a face'."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, original_hu, defaced, mask, affine):
        self.calls += 1
        assert original_hu.shape == mask.shape and defaced.fits(mask.shape)
        defaced_hu = defaced.applied(original_hu)
        assert np.all(defaced_hu[mask] < 0) and np.array_equal(
            original_hu[~mask], defaced_hu[~mask]
        )
        status = Status.IDENTIFIABLE if self.calls == 2 else Status.DEFACED
        verdict = records.verification(status, 0.95 if self.calls == 2 else 0.1)
        return verdict, b"\x89PNG fake figure"


def test_verification_flags_a_surviving_face_and_keeps_its_outputs(dataset):
    settings, scans = dataset
    results = run(settings, scans, ThresholdSegmenter, make_verifier=FlagSecond)
    assert [r.status for r in results] == ["defaced", "identifiable", "defaced"]
    for scan in scans:
        paths = output_paths(settings.output_dir, scan)
        assert paths.figure.read_bytes() == b"\x89PNG fake figure" and paths.defaced.is_file()
        assert not paths.thumbnail.exists()  # an unreadable figure costs its thumbnail only
    prov = read_provenance(output_paths(settings.output_dir, scans[1]).defaced_json)
    assert prov is not None and prov.verification is not None
    assert prov.status == Status.IDENTIFIABLE and prov.verification.face_p_after == 0.95


def test_changed_request_redoes_the_scan(dataset):
    settings, scans = dataset
    run(settings, scans, ThresholdSegmenter)
    seg = ThresholdSegmenter()
    results = run(dataclasses.replace(settings, fill="air"), scans, lambda: seg)
    assert [r.status for r in results] == [Status.DEFACED] * 3 and seg.calls == 3
    results = run(
        dataclasses.replace(settings, fill="air"), scans, lambda: seg, model_key={"a": "b"}
    )
    assert [r.status for r in results] == [Status.DEFACED] * 3 and seg.calls == 6


def _head_slab(relpath: str) -> nib.Nifti1Image:
    """40 mm of air in front of 20 mm of tissue (40 HU) holding a bone block (1000 HU), 1 mm."""
    hu = np.full((40, 40, 40), -1000, np.int16)
    hu[:, :20, :] = 40
    hu[16:24, 4:10, 16:24] = 1000
    return nib.Nifti1Image(hu, np.eye(4))


def test_postprocess_grows_the_mask_and_is_recorded(tmp_path):
    bids = make_bids_dataset(tmp_path / "bids", _head_slab)
    settings = Settings(bids_dir=bids, output_dir=tmp_path / "out", analysis_level="participant")
    scan = find_scans(bids)[0]
    paths = output_paths(settings.output_dir, scan)
    hu = np.asanyarray(_head_slab(scan.relpath).dataobj)

    def mask() -> np.ndarray:
        return np.asanyarray(nib.load(str(paths.mask)).dataobj).astype(bool)

    assert run(settings, [scan], ThresholdSegmenter)[0].status == Status.DEFACED
    plain = mask()
    np.testing.assert_array_equal(plain, hu > 0)  # the stand-in's mask, as drawn
    grown = run(dataclasses.replace(settings, postprocess=True), [scan], ThresholdSegmenter)
    assert grown[0].status == Status.DEFACED
    post = mask()
    tissue = plain & (hu <= 600)
    assert (post & tissue).sum() == tissue.sum() and not (post & (hu > 600)).any()
    added = post & ~plain
    assert added.any() and (hu[added] == -1000).all()  # the margin lies in the air
    assert np.flatnonzero(added.any(axis=(0, 2))).tolist() == list(range(20, 28))  # 8 mm
    prov = read_provenance(paths.defaced_json)
    assert prov is not None and prov.post_processing is not None
    assert prov.post_processing.margin is not None and prov.post_processing.margin.margin_mm == 8
    assert prov.request.post_process is True


def test_unreadable_inputs_never_load_the_model(dataset):
    settings, scans = dataset
    for scan in scans:
        scan.path.write_bytes(b"")

    def must_not_load():
        raise AssertionError("the model was loaded although no input could be read")

    results = run(settings, scans, must_not_load)
    assert [r.status for r in results] == [Status.FAILED] * 3
    assert all("empty file" in r.message for r in results)


def test_errors_raised_without_a_path_are_named_after_the_scan(dataset):
    from ctadeface.errors import InputError

    class Refuses(ThresholdSegmenter):
        def predict(self, volume, spacing, **scaling):
            raise InputError("the image covers 1e9 mm")

    settings, scans = dataset
    results = run(settings, scans[:1], Refuses)
    assert results[0].message == f"{scans[0].path}: the image covers 1e9 mm"


def test_read_ahead_loads_the_next_image_in_the_background(tmp_path):
    import threading

    from ctadeface.participant import ReadAhead

    seen: list[tuple[str, str]] = []

    def load(path: Path):
        seen.append((path.name, threading.current_thread().name))
        if path.name == "bad":
            raise ValueError("broken file")
        return path.name

    reader = ReadAhead(load)  # type: ignore[arg-type]
    try:
        assert reader.load(Path("a"), then=Path("b")) == "a"
        assert reader.load(Path("b"), then=Path("bad")) == "b"
        with pytest.raises(ValueError, match="broken file"):  # raised where it is asked for
            reader.load(Path("bad"), then=None)
        assert reader.load(Path("c")) == "c"  # not read ahead: read now
    finally:
        reader.close()
    assert [name for name, _ in seen] == ["a", "b", "bad", "c"]
    threads = dict(seen)
    assert threads["a"] == threads["c"] == threading.current_thread().name
    assert threads["b"].startswith("ctadeface-read") and threads["bad"].startswith("ctadeface-read")
