"""Tests of ctadeface.segment: FaceSegmenter gives exactly what nnU-Net's own CLI gives."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from ctadeface.errors import ModelError, UsageError
from ctadeface.models import resolve_model
from ctadeface.segment import FaceSegmenter, check_checkpoint_globals, choose_device
from ctadeface.train import Case, TrainConfig, train

CLI = Path(sys.executable).parent / "nnUNetv2_predict_from_modelfolder"


def blob_case(seed: int, shape=(40, 48, 36), spacing=(4.0, 4.0, 5.0)) -> Case:
    """An ellipsoid 'head' (skin, skull shell, brain) in air; 'face' = its anterior (+j) rim."""
    rng = np.random.default_rng(seed)
    idx = np.indices(shape).astype(np.float32)
    centre = np.array(shape) / 2 + rng.normal(0, 1.5, 3)
    radii = np.array(shape) * np.array([0.35, 0.38, 0.38]) * rng.uniform(0.9, 1.1)
    d = np.sqrt(sum(((idx[a] - centre[a]) / radii[a]) ** 2 for a in range(3)))
    hu = np.full(shape, -1000, np.float32)
    hu[d < 1.0] = 40
    hu[(d < 0.9) & (d > 0.8)] = 1000
    hu[d < 0.8] = 30
    hu += rng.normal(0, 10, shape).astype(np.float32)
    face = (d < 1.25) & (d > 0.8) & (idx[1] > centre[1] + 0.5 * radii[1])
    return Case(hu=hu, face=face, spacing=spacing)


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model trained for a few iterations, with mirroring axes so TTA does something."""
    out = tmp_path_factory.mktemp("model")
    config = TrainConfig(
        out=out,
        iterations=40,
        features=(4, 8, 16),
        patch=32,
        spacing=4.0,
        mirror_axes=(0, 1, 2),
    )
    return train(config, [blob_case(s) for s in range(4)]).folder


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, tuple]:
    """A NIfTI with a non-RAS affine, anisotropic spacing and a fractional slope."""
    case = blob_case(7, shape=(40, 48, 36))
    slope, inter = 0.7, -1023.3
    stored = np.round((case.hu - inter) / slope).astype(np.int16)
    affine = np.array(
        [[0.0, 0.0, -5.0, 80.0], [-3.5, 0.0, 0.0, 90.0], [0.0, 4.2, 0.0, -60.0], [0, 0, 0, 1]]
    )
    img = nib.Nifti1Image(stored, affine)
    img.header.set_slope_inter(slope, inter)
    folder = tmp_path_factory.mktemp("scan")
    path = folder / "case_0000.nii.gz"
    nib.save(img, path)
    loaded = nib.load(path)
    # HU as SimpleITK computes them (double arithmetic, then float32)
    hu = np.asarray(loaded.get_fdata(dtype=np.float64), dtype=np.float32)
    spacing = tuple(float(z) for z in loaded.header.get_zooms()[:3])
    return path, hu, spacing


def run_nnunet_cli(model: Path, scan: Path, out: Path, tta: bool) -> np.ndarray:
    if not CLI.exists():
        pytest.skip(f"{CLI} not installed")
    args = [str(CLI), "-i", str(scan.parent), "-o", str(out), "-m", str(model), "-f", "all"]
    args += ["-device", "cpu", "-npp", "1", "-nps", "1", "--disable_progress_bar"]
    args += [] if tta else ["--disable_tta"]
    subprocess.run(args, check=True, capture_output=True, timeout=300)
    written = nib.load(out / "case.nii.gz")
    return np.asarray(written.dataobj)


@pytest.mark.parametrize("tta", [False, True])
def test_exactly_what_nnunet_cli_gives(
    model_folder: Path, scan: tuple, tmp_path: Path, tta: bool
) -> None:
    path, hu, spacing = scan
    reference = run_nnunet_cli(model_folder, path, tmp_path / "out", tta)
    spec = resolve_model(str(model_folder), tmp_path / "cache")
    segmenter = FaceSegmenter(spec, device="cpu", tta=tta, nprocs=1)
    mask = segmenter.predict(hu, spacing)
    assert mask.dtype == bool
    assert mask.shape == hu.shape == reference.shape
    assert 0 < reference.sum() < reference.size / 2, "the test model must give a non-trivial mask"
    assert np.array_equal(mask, reference > 0)


def test_one_segmenter_many_scans_and_tta_changes_something(
    model_folder: Path, scan: tuple, tmp_path: Path
) -> None:
    _, hu, spacing = scan
    spec = resolve_model(str(model_folder), tmp_path / "cache")
    plain = FaceSegmenter(spec, device="cpu", tta=False, nprocs=1)
    first = plain.predict(hu, spacing)
    other = blob_case(8, shape=(30, 36, 28), spacing=(5.0, 5.0, 6.0))
    assert plain.predict(other.hu, other.spacing).shape == other.hu.shape
    assert np.array_equal(plain.predict(hu, spacing), first)  # no state leaks between scans
    mirrored = FaceSegmenter(spec, device="cpu", tta=True, nprocs=1).predict(hu, spacing)
    assert not np.array_equal(mirrored, first)


def test_describe_has_provenance(model_folder: Path, tmp_path: Path) -> None:
    spec = resolve_model(str(model_folder), tmp_path / "cache")
    info = FaceSegmenter(spec, device="cpu").describe()
    assert info["folder"] == str(spec.folder)
    assert info["configuration"] == "3d_fullres"
    assert info["folds"] == ["all"]
    assert info["checkpoint_sha256"] == dict(spec.checkpoint_sha256)
    assert info["tta"] is False
    assert info["device"] == "cpu"
    assert info["versions"]["nnunetv2"] == "2.8.1"
    json.dumps(info)  # goes into JSON sidecars


def test_prints_nothing(model_folder: Path, scan: tuple, tmp_path: Path, capfd) -> None:
    _, hu, spacing = scan
    spec = resolve_model(str(model_folder), tmp_path / "cache")
    FaceSegmenter(spec, device="cpu").predict(hu, spacing)
    assert capfd.readouterr().out == ""


def test_device_choice() -> None:
    assert choose_device("cpu").type == "cpu"
    assert choose_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UsageError, match="use auto, cpu, cuda"):
        choose_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no CUDA device"):
            choose_device("cuda")


def test_checkpoint_with_python_objects_is_refused(model_folder: Path, tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(model_folder, copy)
    checkpoint = copy / "fold_all" / "checkpoint_final.pth"
    content = torch.load(checkpoint, weights_only=False)
    check_checkpoint_globals(checkpoint)  # what train.py writes passes
    content["payload"] = Path("/etc/passwd")  # any non-tensor class would do
    torch.save(content, checkpoint)
    with pytest.raises(ModelError, match=r"refusing checkpoint .*pathlib"):
        FaceSegmenter(resolve_model(str(copy), tmp_path / "cache"), device="cpu")


def test_unsupported_reader_is_refused(model_folder: Path, tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(model_folder, copy)
    plans = json.loads((copy / "plans.json").read_text())
    plans["image_reader_writer"] = "SimpleITKIOWithReorient"
    (copy / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(ModelError, match="reads images with SimpleITKIOWithReorient"):
        FaceSegmenter(resolve_model(str(copy), tmp_path / "cache"), device="cpu")


def test_absurd_voxel_sizes_are_refused_before_resampling():
    from ctadeface.errors import InputError
    from ctadeface.models import resolve_model
    from ctadeface.segment import FaceSegmenter

    tiny = Path(__file__).parent / "data" / "tiny_model" / "Dataset900_TinyFace"
    seg = FaceSegmenter(resolve_model(str(tiny), Path("/nonexistent-cache")), device="cpu")
    hu = np.full((20, 20, 20), -1000.0, np.float32)
    with pytest.raises(InputError, match="voxel sizes"):
        seg.predict(hu, (400.0, 400.0, 400.0))
