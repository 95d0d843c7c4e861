"""ctadeface.cli: arguments, exit codes (BEP027), one-line errors; end to end on the tiny model."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import pytest

from ctadeface import __version__
from ctadeface.cli import build_parser, main
from tests.bidsfixture import make_bids_dataset

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def bids(tmp_path):
    return make_bids_dataset(tmp_path / "bids")


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_underscore_and_dash_spellings_are_the_same():
    p = build_parser()
    a = p.parse_args(["b", "o", "participant", "--participant_label", "01", "--n_cpus", "2"])
    b = p.parse_args(["b", "o", "participant", "--participant-label", "01", "--nprocs", "2"])
    assert vars(a) == vars(b)
    assert p.parse_args(["b", "o", "group", "--no-tta"]).tta is False
    assert p.parse_args(["b", "o", "group", "--tta"]).tta is True


def test_version_prints_the_version_file(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"ctadeface {__version__}"
    assert __version__ == (ROOT / "version").read_text().strip()


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--participant-label", "../x"], "../x"),
        (["--participant-label", "a*"], "a*"),
        (["--participant-label", "a/b"], "a/b"),
        (["--fill", "zero"], "--fill"),
        (["--nprocs", "0"], "--nprocs"),
        (["--bogus"], "--bogus"),
    ],
)
def test_usage_errors_exit_64_with_one_line(capsys, bids, tmp_path, extra, words):
    code, _, err = _run(capsys, bids, tmp_path / "out", "participant", *extra)
    assert code == 64
    lines = err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in err


@pytest.mark.parametrize("where", [".", "sub-01", "sourcedata/out"])
def test_output_inside_the_raw_dataset_is_refused(capsys, bids, where):
    code, _, err = _run(capsys, bids, bids / where, "participant")
    assert code == 64 and "output_dir" in err
    assert not (bids / where / "dataset_description.json").exists() or where == "."


def test_unknown_participant_exits_66_naming_it(capsys, bids, tmp_path):
    code, _, err = _run(capsys, bids, tmp_path / "out", "participant", "--participant-label", "99")
    assert code == 66 and "sub-99" in err


def test_unknown_model_is_a_usage_error(capsys, bids, tmp_path):
    code, _, err = _run(capsys, bids, tmp_path / "out", "participant", "--model", "nonexistent")
    assert code == 64 and "nonexistent" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_run_py_is_a_thin_executable_shim(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and "participant" in proc.stdout
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), str(tmp_path / "nope"), str(tmp_path), "group"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 64 and "bids_dir is not a folder" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- end to end on the tiny committed model ----------------------------------------------------

TINY_MODEL = ROOT / "tests" / "data" / "tiny_model" / "Dataset900_TinyFace"


def _phantom_image(relpath: str):
    from ctadeface.training.phantom import make_phantom

    seed = sum(relpath.encode())
    return make_phantom(seed, shape=(48, 52, 44), spacing=(4.0, 4.0, 4.0)).to_nifti()


def _snapshot(root: Path) -> dict[str, tuple[str, int]]:
    import hashlib

    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    """The issue's 'done means' dataset, defaced once by the participant level."""
    tmp = tmp_path_factory.mktemp("e2e")
    bids = make_bids_dataset(tmp / "bids", image_factory=_phantom_image)
    raw_before = _snapshot(bids)
    out = tmp / "out"
    argv = [str(bids), str(out), "participant", "--model", str(TINY_MODEL), "--nprocs", "1"]
    code = main([*argv, "--no-verify"])  # verification: test_e2e_verification_* below
    return bids, out, raw_before, code


def test_e2e_participant_writes_exactly_the_documented_files(e2e):
    from tests.bidsfixture import CT_RELPATHS

    _, out, _, code = e2e
    assert code == 0
    expected = {"dataset_description.json", "logs/CITATION.md"}
    for rel in CT_RELPATHS:
        folder, name = rel.rsplit("/", 1)
        stem, suffix = name.removesuffix(".nii.gz").rsplit("_", 1)
        expected |= {
            f"{folder}/{stem}_desc-defaced_{suffix}.nii.gz",
            f"{folder}/{stem}_desc-defaced_{suffix}.json",
            f"{folder}/{stem}_space-orig_label-face_mask.nii.gz",
            f"{folder}/{stem}_space-orig_label-face_mask.json",
        }
    found = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    logs = {f for f in found if f.startswith("logs/participant-") and f.endswith(".log")}
    assert len(logs) == 1
    assert found - logs == expected


def test_e2e_images_keep_header_and_change_only_masked_voxels(e2e):
    import nibabel as nib
    import numpy as np

    bids, out, _, _ = e2e
    defaced = sorted(out.rglob("*_desc-defaced_*.nii.gz"))
    assert len(defaced) == 3
    total_masked = 0
    for path in defaced:
        stem, suffix = path.name.split("_desc-defaced_")
        source = bids / path.parent.relative_to(out) / f"{stem}_{suffix}"
        mask_path = path.with_name(f"{stem}_space-orig_label-face_mask.nii.gz")
        src, dst, mask = (nib.load(str(p)) for p in (source, path, mask_path))
        assert dst.header.binaryblock == src.header.binaryblock
        raw_header = gzip.decompress(source.read_bytes())[:348]  # scl_* as on disk
        assert gzip.decompress(path.read_bytes())[:348] == raw_header
        assert dst.get_data_dtype() == src.get_data_dtype()
        a, b = np.asanyarray(src.dataobj.get_unscaled()), np.asanyarray(dst.dataobj.get_unscaled())
        m = np.asanyarray(mask.dataobj).astype(bool)
        assert mask.get_data_dtype() == np.uint8 and m.shape == a.shape
        np.testing.assert_allclose(mask.affine, src.affine)
        np.testing.assert_array_equal(a[~m], b[~m])
        total_masked += int(m.sum())
    assert total_masked > 0


def test_e2e_sidecars_have_no_phi_and_record_provenance(e2e):
    import json

    from ctadeface.outputs import PHI_FIELDS
    from tests.bidsfixture import ROOT_SIDECAR

    _, out, _, _ = e2e
    for path in out.rglob("sub-*/**/*.json"):
        text = path.read_text()
        for secret in ("Doe^Jane", "Roe^Richard", "P123456", "Secret Hospital", "Dr^Who"):
            assert secret not in text, (path, secret)
        record = json.loads(text)
        assert not set(record) & set(PHI_FIELDS)
        assert record["Sources"][0].startswith("bids:raw:sub-")
    for path in out.rglob("*_desc-defaced_*.json"):
        record = json.loads(path.read_text())
        prov = record["Defacing"]
        assert record["Modality"] == ROOT_SIDECAR["Modality"]  # inherited from the root sidecar
        assert len(prov["InputSHA256"]) == 64 and prov["Model"]["Configuration"] == "3d_fullres"
        assert prov["Fill"]["Policy"] == "p10" and prov["MaskVoxels"] >= 0
        assert "PatientName" in prov["RemovedSidecarFields"]
        assert prov["Model"]["Precision"] in ("fp32", "bf16")  # the fast path, on CPU
        assert prov["Request"]["Inference"].startswith("fast")


def test_strict_mask_mode_grows_the_mask_and_is_recorded(bids, tmp_path):
    """--mask strict: the face mask of the default mode plus the front of the facial skeleton,
    recorded in the request and the provenance; a rerun in the other mode redoes the scan."""
    import json

    import nibabel as nib
    import numpy as np

    out = tmp_path / "out"
    argv = [str(bids), str(out), "participant", "--model", str(TINY_MODEL), "--nprocs", "1"]
    argv += ["--participant-label", "01", "--no-verify", "--postprocess"]
    mask_name = "sub-01_acq-cta_ce-iodine_space-orig_label-face_mask.nii.gz"
    sidecar = "sub-01_*_desc-defaced_*.json"
    assert main([*argv, "--mask", "face"]) == 0
    face = nib.load(str(next(out.rglob(mask_name)))).get_fdata() > 0
    assert json.loads(next(out.rglob(sidecar)).read_text())["Defacing"]["Strict"] == "none"
    assert main([*argv, "--mask", "strict"]) == 0  # another request: redone, not skipped
    strict = nib.load(str(next(out.rglob(mask_name)))).get_fdata() > 0
    assert (strict & face).sum() == face.sum() and strict.sum() > face.sum()
    prov = json.loads(next(out.rglob(sidecar)).read_text())["Defacing"]
    assert prov["Request"]["MaskMode"] == "strict" and prov["Strict"]["DepthMm"] > 0
    # the seal: part of the mask set to soft tissue, the rest to the fill
    defaced = nib.load(str(next(out.rglob("sub-01_*_desc-defaced_ct.nii.gz")))).get_fdata()
    sealed = strict & np.isclose(defaced, prov["Strict"]["SealHU"], atol=0.5)
    filled = strict & np.isclose(defaced, prov["Fill"]["ValueHU"], atol=0.5)
    assert sealed.sum() > 0 and filled.sum() > 0
    assert (sealed | filled).sum() == strict.sum()


def test_exact_and_precision_reach_the_segmenter_and_the_provenance(capsys, bids, tmp_path):
    import json

    out = tmp_path / "out"
    argv = [str(bids), str(out), "participant", "--model", str(TINY_MODEL), "--no-verify"]
    argv += ["--participant-label", "01", "--exact", "--precision", "fp32"]
    assert main(argv) == 0
    prov = json.loads(next(out.rglob("*_desc-defaced_*.json")).read_text())["Defacing"]
    assert prov["Model"]["Inference"] == "exact nnU-Net pipeline"
    assert prov["Request"]["Inference"] == "exact"
    assert main([*argv[:-3], "--precision", "fp16"]) == 64  # fp16 needs CUDA
    assert "needs a CUDA device" in capsys.readouterr().err


def test_e2e_raw_dataset_is_byte_identical(e2e):
    bids, _, raw_before, _ = e2e
    assert _snapshot(bids) == raw_before


def test_e2e_pybids_indexes_the_outputs_as_a_derivative_dataset(e2e):
    from bids import BIDSLayout

    bids, out, _, _ = e2e
    layout = BIDSLayout(bids, validate=False, derivatives=str(out))
    derivative = layout.derivatives.get_pipeline("ctadeface")
    images = derivative.get(desc="defaced", extension=[".nii.gz", ".nii"], return_type="filename")
    assert sorted(Path(f).name for f in images) == sorted(
        p.name for p in out.rglob("*_desc-defaced_*.nii.gz")
    )
    assert len(images) == 3


def test_e2e_second_run_rewrites_nothing_and_group_lists_every_scan(e2e, capsys):
    bids, out, _, _ = e2e
    before = {k: v for k, v in _snapshot(out).items() if not k.startswith("logs/")}
    code = main([str(bids), str(out), "participant", "--model", str(TINY_MODEL), "--no-verify"])
    after = {k: v for k, v in _snapshot(out).items() if not k.startswith("logs/")}
    assert code == 0 and after == before
    assert "3 skipped" in capsys.readouterr().out

    assert main([str(bids), str(out), "group"]) == 0
    lines = (out / "group_ct.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    assert header[:4] == ["participant_id", "session_id", "source", "status"]
    assert len(lines) == 1 + 3
    rows = [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]
    assert {r["status"] for r in rows} <= {"defaced", "mask-empty"}
    assert {r["participant_id"] for r in rows} == {"sub-01", "sub-02"}


def test_output_that_cannot_be_created_exits_73(capsys, bids, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, _, err = _run(capsys, bids, blocker / "out", "participant", "--model", str(TINY_MODEL))
    assert code == 73 and "a-file" in err and "Traceback" not in err


def test_dry_run_lists_and_writes_nothing(capsys, bids, tmp_path):
    out = tmp_path / "out"
    code, stdout, _ = _run(
        capsys, bids, out, "participant", "--model", str(TINY_MODEL), "--dry-run"
    )
    assert code == 0 and stdout.count("planned\t") == 3
    assert not out.exists()


def test_console_script_points_at_cli_main():
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "ctadeface"]
    assert script.value == "ctadeface.cli:main"


def test_one_corrupt_scan_exits_1_and_all_corrupt_exits_65(capsys, tmp_path):
    from tests.bidsfixture import CT_RELPATHS

    bids = make_bids_dataset(tmp_path / "bids", image_factory=_phantom_image)
    (bids / CT_RELPATHS[1]).write_bytes(b"\x1f\x8b" + b"garbage" * 50)
    argv = [bids, tmp_path / "out", "participant", "--model", TINY_MODEL, "--nprocs", "1"]
    code, _, err = _run(capsys, *argv)
    assert code == 1
    errors = [line for line in err.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and CT_RELPATHS[1] in errors[0] and "Traceback" not in err
    assert len(list((tmp_path / "out").rglob("*_desc-defaced_*.nii.gz"))) == 2

    for rel in CT_RELPATHS:
        (bids / rel).write_bytes(b"")
    code, _, err = _run(capsys, *argv[:1], tmp_path / "out2", *argv[2:])
    assert code == 65 and err.count("empty file") == 3


def test_filter_file_and_labels_narrow_the_scans(capsys, bids, tmp_path):
    import json

    filters = tmp_path / "filters.json"
    filters.write_text(json.dumps({"ct": {"ceagent": "iodine"}}))
    common = [bids, tmp_path / "out", "participant", "--model", TINY_MODEL, "--dry-run"]
    code, out, _ = _run(capsys, *common, "--bids-filter-file", filters)
    assert code == 0 and out.count("planned\t") == 2 and "run-1" not in out
    code, out, _ = _run(capsys, *common, "--participant_label", "sub-02", "--session-label", "2")
    assert code == 0 and out.count("planned\t") == 1 and "ses-2" in out
    filters.write_text("{not json")
    code, _, err = _run(capsys, *common, "--bids-filter-file", filters)
    assert code == 64 and "filters.json" in err


def test_e2e_verification_writes_figures_and_records_the_verdict(capsys, tmp_path):
    import json

    from tests.bidsfixture import CT_RELPATHS

    bids = make_bids_dataset(tmp_path / "bids", image_factory=_phantom_image)
    out = tmp_path / "out"
    argv = [bids, out, "participant", "--model", TINY_MODEL, "--participant-label", "02"]
    code, _, _ = _run(capsys, *argv)
    figures = sorted((out / "sub-02" / "figures").glob("*_desc-deface_render.png"))
    assert [f.name for f in figures] == sorted(
        Path(rel).name.replace(".nii.gz", "").rsplit("_", 1)[0] + "_desc-deface_render.png"
        for rel in CT_RELPATHS[1:]
    )
    assert all(f.read_bytes().startswith(b"\x89PNG") for f in figures)
    thumbnails = [f.with_name(f.name.replace("desc-deface_", "desc-defacethumb_")) for f in figures]
    assert all(t.with_suffix(".jpg").read_bytes().startswith(b"\xff\xd8") for t in thumbnails)
    statuses = []
    for sidecar in out.rglob("*_desc-defaced_*.json"):
        verdict = json.loads(sidecar.read_text())["Defacing"]["Verification"]
        assert 0.0 <= verdict["FacePAfter"] <= 1.0 and verdict["NRenders"] == 15
        assert verdict["MaskMode"] == "face" and verdict["Identity"]["GalleryHeads"] > 0
        assert verdict["FaceNetSimilarity"] is None or -1 <= verdict["FaceNetSimilarity"] <= 1
        statuses.append(verdict["Status"])
    assert code == (1 if "identifiable" in statuses else 0)  # face-like is not a failure here
    assert _run(capsys, bids, out, "group", "--participant-label", "02")[0] == 0
    page = (out / "group_report.html").read_text()
    assert "data:image" not in page  # the figures are linked, not embedded
    for figure in figures:
        assert f'"{figure.relative_to(out).as_posix()}"' in page
