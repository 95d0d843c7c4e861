"""ctadeface.report: group TSV rows and the self-contained HTML report (checked in Chromium)."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import MappingProxyType

import pytest

from ctadeface.discover import Scan
from ctadeface.report import COLUMNS, group_report_html, group_table, to_tsv
from ctadeface.status import Status
from tests import records

# A valid 1x1 PNG (gray pixel).
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def _scan(sub: str, ses: str | None = None) -> Scan:
    folder = f"sub-{sub}" + (f"/ses-{ses}" if ses else "") + "/anat"
    stem = f"sub-{sub}" + (f"_ses-{ses}" if ses else "")
    ents = (("sub", sub),) + ((("ses", ses),) if ses else ())
    return Scan(
        path=Path("/raw") / folder / f"{stem}_ct.nii.gz",
        relpath=f"{folder}/{stem}_ct.nii.gz",
        subject=sub,
        session=ses,
        entities=ents,
        suffix="ct",
        datatype="anat",
        extension=".nii.gz",
        metadata=MappingProxyType({}),
        sidecars=(),
        problem=None,
    )


def _rows():
    pairs = [
        (_scan("01"), records.provenance(Status.DEFACED, 0.1)),
        (_scan("02", "a"), None),
        (_scan("03"), records.provenance(Status.IDENTIFIABLE, 0.93)),
        (_scan("04"), records.provenance(Status.FACE_LIKE, 0.6)),
        (_scan("05"), records.provenance(Status.FACE_LIKE, 0.6, mask_mode="strict")),
    ]
    return group_table(pairs)


def test_rows_flag_problems_first_and_fill_na():
    rows = _rows()
    statuses = [(r["participant_id"], r["status"], r["mask_mode"]) for r in rows]
    assert statuses == [
        ("sub-03", "identifiable", "face"),
        ("sub-05", "face-like", "strict"),  # a failure of strict mode
        ("sub-02", "missing", "n/a"),
        ("sub-04", "face-like", "face"),  # the kept facial skeleton: shown, not urgent
        ("sub-01", "defaced", "face"),
    ]
    assert rows[0]["identity_rank1_views"] == "1/12" and rows[0]["identity_p"] == "0.001"
    missing = rows[2]
    assert missing["session_id"] == "ses-a" and missing["mask_volume_ml"] == "n/a"
    done = rows[4]
    assert done["face_p_after"] == "0.100" and done["facenet_similarity"] == "n/a"
    assert done["model"] == "open" and done["device"] == "cpu" and done["fill_value"] == "-1000.0"
    assert done["dlib_faces_after"] == "0" and done["identity_chance"] == "0.0067"


def test_tsv_has_the_documented_columns_one_row_per_scan():
    text = to_tsv(_rows())
    lines = text.splitlines()
    assert lines[0].split("\t") == list(COLUMNS)
    assert len(lines) == 6 and all(len(line.split("\t")) == len(COLUMNS) for line in lines)
    for column in (
        "participant_id",
        "status",
        "mask_mode",
        "identity_rank1_views",
        "identity_chance",
        "identity_p",
        "face_p_before",
        "face_p_after",
        "dlib_faces_after",
        "seconds",
    ):
        assert column in COLUMNS


def test_html_is_self_contained_and_escaped():
    rows = _rows()
    rows[0]["model"] = "<script>alert(1)</script>"
    page = group_report_html(rows, {"sub-01/anat/sub-01_ct.nii.gz": PNG})
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # nothing fetched from elsewhere
    assert page.count("data:image/png;base64,") == 1
    assert page.index("sub-03") < page.index("sub-01")  # flagged first


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed")
def test_report_loads_in_chromium_without_errors_and_every_image_decodes(tmp_path):
    figures = {r["source"]: PNG for r in _rows() if r["status"] != "missing"}
    page = tmp_path / "group_report.html"
    page.write_text(group_report_html(_rows(), figures), encoding="utf-8")
    profile = tempfile.mkdtemp(prefix="chromium-")
    cmd = [
        _chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
        "--virtual-time-budget=5000", "--dump-dom", page.as_uri(),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=dict(os.environ))
    shutil.rmtree(profile, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []
    assert f'data-images-decoded="{len(figures)}/{len(figures)}"' in proc.stdout
