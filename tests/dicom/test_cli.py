"""ctadeface.dicom.cli and ctadeface.dicom.run: ``ctadeface-dicom`` end to end on phantom
series, with the tiny test model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from ctadeface.dicom import find_series, load_series
from ctadeface.dicom.cli import main
from ctadeface.dicom.run import SUMMARY_TSV, series_paths
from ctadeface.outputs import PROVENANCE_KEY
from tests.dicom.make import DOSE_SR, write_affine_series, write_other, write_series
from tests.test_robustness import phantom_hu, snapshot, stored

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "data" / "tiny_model" / "Dataset900_TinyFace"
FAST = ("--model", str(TINY), "--nprocs", "1", "--device", "cpu", "--no-verify")


def _run(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _phantom_series(folder: Path, seed: int, **kw) -> str:
    hu, affine = phantom_hu(seed)
    slope = kw.pop("slope", 1.0)
    dtype = kw.pop("dtype", "int16")
    inter = -1024.0
    return write_affine_series(
        folder, stored(hu, dtype, slope, inter), affine, slope=slope, inter=inter, **kw
    )


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """A PACS-export-like folder: two phantom CT series in one folder (int16 slope 0.5; uint16),
    a localizer and a dose report; shuffled file names."""
    root = tmp_path_factory.mktemp("archive") / "export"
    _phantom_series(root / "DICOM", 1, slope=0.5, prefix="IM")
    _phantom_series(root / "DICOM", 2, dtype="uint16", prefix="IMG")
    write_series(
        root / "scout",
        np.zeros((16, 16, 1), np.int16),
        image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
    )
    write_other(root / "dose" / "sr.dcm", DOSE_SR, "SR")
    return root


@pytest.fixture(scope="module")
def done(archive, tmp_path_factory):
    """The archive defaced once (Basic Profile), with what the run printed."""
    out = tmp_path_factory.mktemp("done") / "out"
    before = snapshot(archive)
    code = main([str(archive), str(out), *FAST])
    return archive, out, code, before


def _outputs(archive: Path, out: Path):
    found, _ = find_series(archive)
    return [(series, series_paths(out, series)) for series in found]


def test_every_ct_series_is_defaced_and_the_rest_listed(done, capsys):
    archive, out, code, before = done
    assert code == 0
    assert snapshot(archive) == before  # INPUT never written
    pairs = _outputs(archive, out)
    assert len(pairs) == 2
    for series, paths in pairs:
        assert sorted(p.name for p in paths.folder.iterdir()) == ["ct", "defacing.json", "seg.dcm"]
        source = load_series(series)
        (written,), _ = find_series(paths.ct)
        back = load_series(written)
        assert back.image.data.dtype == source.image.data.dtype
        assert np.allclose(back.image.affine, source.image.affine)
        import highdicom as hd

        seg = hd.seg.segread(paths.seg)
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == written.uid
        changed = back.image.data != source.image.data
        assert changed.any()
        mask = _seg_mask(seg, back)
        assert not (changed & ~mask).any()  # only voxels of the mask changed
    rows = (out / SUMMARY_TSV).read_text().splitlines()
    assert len(rows) == 3 and all("\tdefaced\t" in r for r in rows[1:])
    assert (out / "summary.html").is_file()
    assert sorted(p.name.split("-")[0] for p in (out / "logs").iterdir()) == ["dicom"]


def _seg_mask(seg, volume) -> np.ndarray:
    """The SEG's segment 1 on the volume's grid (columns, rows, slices)."""
    mask = np.zeros(volume.image.data.shape, bool)
    by_uid = {}
    for k, item in enumerate(volume.slices):
        by_uid[str(pydicom.dcmread(item.path, stop_before_pixels=True).SOPInstanceUID)] = k
    for uid, k in by_uid.items():
        try:
            plane = seg.get_pixels_by_source_instance(
                source_sop_instance_uids=[uid], segment_numbers=[1]
            )
        except (KeyError, ValueError):  # an empty frame is not stored
            continue
        mask[:, :, k] = plane[0, :, :, 0].T.astype(bool)
    return mask


def test_the_provenance_has_the_bids_apps_keys_and_the_profile(done):
    from ctadeface.provenance import Provenance
    from ctadeface.records import from_json

    archive, out, _, _ = done
    for _, paths in _outputs(archive, out):
        record = json.loads(paths.provenance.read_text())
        prov = from_json(Provenance, record[PROVENANCE_KEY])
        assert prov.request.verified is False and prov.mask_voxels > 0
        assert record["Deidentification"]["Profile"] == "basic"
        first = pydicom.dcmread(next(paths.ct.iterdir()))
        assert first.PatientIdentityRemoved == "YES" and first.InstitutionName != "Test Hospital"


def test_a_rerun_skips_and_a_changed_output_is_redone(done, capsys):
    archive, out, _, _ = done
    pairs = _outputs(archive, out)
    kept = snapshot(out / pairs[0][1].folder.name)
    code, printed, _ = _run(capsys, archive, out, *FAST)
    assert code == 0 and "2 skipped" in printed
    assert snapshot(out / pairs[0][1].folder.name) == kept
    victim = sorted(pairs[1][1].ct.iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:-2] + b"\0\0")
    code, printed, _ = _run(capsys, archive, out, *FAST)
    assert code == 0 and "1 defaced" in printed and "1 skipped" in printed
    code, printed, _ = _run(capsys, archive, out, *FAST, "--overwrite")
    assert code == 0 and "2 defaced" in printed
    again = snapshot(out / pairs[0][1].folder.name)  # redone: the same series, UIDs and all
    assert {k: v for k, v in again.items() if k.startswith("ct")} == {
        k: v for k, v in kept.items() if k.startswith("ct")
    }


def test_series_uid_picks_one_and_an_unknown_one_exits_66(archive, tmp_path, capsys):
    first = find_series(archive)[0][0]
    code, printed, _ = _run(
        capsys, archive, tmp_path / "o", *FAST, "--series-uid", first.uid, "--dry-run"
    )
    assert code == 0 and printed.count("planned\t") == 1 and not (tmp_path / "o").exists()
    code, _, err = _run(capsys, archive, tmp_path / "o", *FAST, "--series-uid", "1.2.3")
    assert code == 66 and "SeriesInstanceUID 1.2.3" in err and "Traceback" not in err


def test_refused_series_get_one_line_each_and_the_others_still_run(tmp_path, capsys):
    root = tmp_path / "in"
    _phantom_series(root / "good", 3)
    data = np.zeros((32, 32, 10), np.int16)
    gap = [(0.0, 0.0, z) for z in (0, 1, 2, 3, 5, 6, 7, 8, 9, 10)]
    write_series(root / "gap", data, positions=gap)
    tilted = [(1, 0, 0, 0, 1, 0)] * 5 + [(0, 1, 0, 0, 0, -1)] * 5
    write_series(root / "mixed", data, orientation=tilted[0])
    for k, path in enumerate(sorted((root / "mixed").iterdir())):
        ds = pydicom.dcmread(path)
        ds.ImageOrientationPatient = list(tilted[k])
        ds.save_as(path)
    code, printed, err = _run(capsys, root, tmp_path / "out", *FAST)
    lines = [line for line in err.splitlines() if "ERROR" in line]
    assert code == 1 and len(lines) == 2 and "Traceback" not in err
    assert any("missing slice" in line for line in lines)
    assert any("orientation" in line for line in lines)
    assert "1 defaced" in printed and "2 failed" in printed


def test_a_killed_run_leaves_no_series_folder(archive, tmp_path, capsys, monkeypatch):
    from ctadeface.dicom import run as dicom_run

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(dicom_run, "face_segmentation", killed)
    code, _, err = _run(capsys, archive, tmp_path / "out", *FAST)
    assert code == 130 and "interrupted" in err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["logs"]


def test_none_keeps_the_attributes_and_output_inside_input_is_refused(tmp_path, capsys):
    root = tmp_path / "in"
    _phantom_series(root, 4)
    code, _, _ = _run(capsys, root, tmp_path / "out", *FAST, "--deidentify", "none")
    assert code == 0
    (series,), _ = find_series(tmp_path / "out")
    first = pydicom.dcmread(series.files[0])
    assert first.PatientName == "Test^Phantom" and "PatientIdentityRemoved" not in first
    code, _, err = _run(capsys, root, root / "out", *FAST)
    assert code == 64 and "must not be INPUT" in err


def test_verification_writes_the_figure_and_the_report_links_it(tmp_path, capsys):
    root = tmp_path / "in"
    _phantom_series(root, 5)
    argv = ("--model", str(TINY), "--nprocs", "1", "--device", "cpu")
    code, _, _ = _run(capsys, root, tmp_path / "out", *argv)
    (row,) = (tmp_path / "out" / SUMMARY_TSV).read_text().splitlines()[1:]
    status = row.split("\t")[3]
    assert status in ("defaced", "face-like", "identifiable")
    assert code == (1 if status == "identifiable" else 0)  # the BIDS App's exit codes
    (folder,) = [p for p in (tmp_path / "out").iterdir() if p.name.startswith("series-")]
    assert (folder / "render.png").is_file() and (folder / "thumbnail.jpg").is_file()
    page = (tmp_path / "out" / "summary.html").read_text()
    assert f"{folder.name}/thumbnail.jpg" in page and "summary.tsv" in page


def test_python_m_ctadeface_dicom_runs_the_command():
    result = subprocess.run(
        [sys.executable, "-m", "ctadeface.dicom", "--help"],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert result.returncode == 0
    assert "--series-uid" in result.stdout and "--deidentify" in result.stdout
    assert "--mask" in result.stdout and "--verify" in result.stdout
