"""Tests of ctadeface.segment: FaceSegmenter(exact=True) gives exactly what nnU-Net's own CLI
gives; the fast path agrees with it and runs only the tiles that reach the body."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from ctadeface.errors import ModelError, UsageError
from ctadeface.provenance import ModelRecord
from ctadeface.records import from_json, to_json
from ctadeface.segment import resampling
from ctadeface.segment.fast import FastStrategy
from ctadeface.segment.models import resolve_model
from ctadeface.segment.segmenter import (
    FaceSegmenter,
    check_checkpoint_globals,
    choose_device,
    torch_settings,
)
from ctadeface.training.train import Case, TrainConfig, dice, train
from tests import TINY_MODEL

CLI = Path(sys.executable).parent / "nnUNetv2_predict_from_modelfolder"


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Every segmenter here runs on one torch thread, as nnU-Net's CLI is run."""
    with torch_settings(1):
        yield


TRAINED = "nnUNetTrainer__nnUNetPlans__3d_fullres"


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
    # nnU-Net's CLI runs the network on min(nnUNet_def_n_proc, all cores) threads; one thread,
    # like the segmenters here (_one_thread), so that both sides do the same float arithmetic
    env = {**os.environ, "nnUNet_def_n_proc": "1"}
    subprocess.run(args, check=True, capture_output=True, timeout=300, env=env)
    written = nib.load(out / "case.nii.gz")
    return np.asarray(written.dataobj)


@pytest.mark.parametrize("tta", [False, True])
def test_exactly_what_nnunet_cli_gives(
    model_folder: Path, scan: tuple, tmp_path: Path, tta: bool
) -> None:
    path, hu, spacing = scan
    reference = run_nnunet_cli(model_folder, path, tmp_path / "out", tta)
    spec = resolve_model(str(model_folder), tmp_path / "cache")
    segmenter = FaceSegmenter(spec, device="cpu", tta=tta, exact=True)
    mask = segmenter.predict(hu, spacing)
    assert mask.dtype == bool
    assert mask.shape == hu.shape == reference.shape
    assert 0 < reference.sum() < reference.size / 2, "the test model must give a non-trivial mask"
    assert np.array_equal(mask, reference > 0)
    assert segmenter.describe().inference == "exact nnU-Net pipeline"


@pytest.mark.parametrize("tta", [False, True])
def test_fast_path_agrees_with_nnunet_cli(
    model_folder: Path, scan: tuple, tmp_path: Path, tta: bool
) -> None:
    """Same network and tiles; only the resampling differs (linear instead of cubic). This
    40-iteration model on a 40-voxel scan is all boundary, so the bound here is loose; the
    shipped model's agreement on real-size scans is measured by bench/benchmark.py."""
    path, hu, spacing = scan
    reference = run_nnunet_cli(model_folder, path, tmp_path / "out", tta) > 0
    spec = resolve_model(str(model_folder), tmp_path / "cache")
    stored = nib.load(path)
    segmenter = FaceSegmenter(spec, device="cpu", tta=tta, precision="fp32")
    mask = segmenter.predict(
        np.asarray(stored.dataobj.get_unscaled()),
        spacing,
        slope=float(stored.dataobj.slope),
        inter=float(stored.dataobj.inter),
    )
    assert mask.shape == reference.shape and mask.flags.f_contiguous
    assert dice(mask, reference) >= 0.9
    assert np.array_equal(mask, segmenter.predict(hu, spacing))  # stored+scaling == HU


def test_fast_path_equals_exact_path_when_no_resampling_is_needed(
    model_folder: Path, tmp_path: Path
) -> None:
    case = blob_case(7, spacing=(4.0, 4.0, 4.0))  # the model's own spacing
    spec = resolve_model(str(model_folder), tmp_path / "cache")
    fast = FaceSegmenter(spec, device="cpu", precision="fp32").predict(case.hu, case.spacing)
    exact = FaceSegmenter(spec, device="cpu", exact=True).predict(case.hu, case.spacing)
    assert fast.any() and np.array_equal(fast, exact)


def test_fast_path_runs_only_the_tiles_that_reach_the_body(
    model_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A head in one corner of a wide field of view: fewer tiles than nnU-Net's, and the same
    mask as running every tile, except in air far from the body."""
    from scipy import ndimage

    from ctadeface.segment.network import tile_starts

    case = blob_case(9)
    hu = np.full((100, 110, 40), -1000.0, np.float32)
    hu[: case.hu.shape[0], : case.hu.shape[1], : case.hu.shape[2]] = case.hu
    spec = resolve_model(str(model_folder), tmp_path / "cache")
    segmenter = FaceSegmenter(spec, device="cpu", precision="fp32")
    assert isinstance(segmenter.strategy, FastStrategy)
    network = segmenter.strategy.network
    tiles = {"n": 0}
    real_tile = network._predict_tile

    def counted(x: torch.Tensor) -> torch.Tensor:
        tiles["n"] += 1
        return real_tile(x)

    monkeypatch.setattr(network, "_predict_tile", counted)
    fast = segmenter.predict(hu, case.spacing)
    fast_tiles, tiles["n"] = tiles["n"], 0
    monkeypatch.setattr(
        resampling, "body_box", lambda v, *a, **k: tuple(slice(0, n) for n in v.shape)
    )
    monkeypatch.setattr(resampling, "body_on_grid", lambda c, s, shape, *a: np.ones(shape, bool))
    every = segmenter.predict(hu, case.spacing)
    low = resampling.target_shape(hu.shape[::-1], case.spacing[::-1], network.config.spacing)
    starts = tile_starts([max(n, 32) for n in low], [32, 32, 32], 0.5)
    assert 0 < fast_tiles < tiles["n"] == np.prod([len(s) for s in starts])
    assert fast.any() and every.any()
    body_distance = ndimage.distance_transform_edt(hu <= -500, sampling=case.spacing)
    assert (body_distance[fast != every] > 20.0).all()  # differences only far out in the air


def test_fast_path_empty_field_of_view(model_folder: Path, tmp_path: Path) -> None:
    spec = resolve_model(str(model_folder), tmp_path / "cache")
    air = np.full((30, 30, 20), -1000, np.int16)
    assert not FaceSegmenter(spec, device="cpu").predict(air, (4.0, 4.0, 5.0)).any()


def test_one_segmenter_many_scans_and_tta_changes_something(
    model_folder: Path, scan: tuple, tmp_path: Path
) -> None:
    _, hu, spacing = scan
    spec = resolve_model(str(model_folder), tmp_path / "cache")
    plain = FaceSegmenter(spec, device="cpu", tta=False)
    first = plain.predict(hu, spacing)
    other = blob_case(8, shape=(30, 36, 28), spacing=(5.0, 5.0, 6.0))
    assert plain.predict(other.hu, other.spacing).shape == other.hu.shape
    assert np.array_equal(plain.predict(hu, spacing), first)  # no state leaks between scans
    mirrored = FaceSegmenter(spec, device="cpu", tta=True).predict(hu, spacing)
    assert not np.array_equal(mirrored, first)


def test_trainer_variant_is_built_by_nnunet_and_gives_the_same_mask(
    model_folder: Path, scan: tuple, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A trainer the fast path does not know: nnU-Net builds the network, the fast path runs it."""
    _, hu, spacing = scan
    variant = tmp_path / model_folder.parent.name / TRAINED.replace("Trainer_", "TrainerNoDA_")
    shutil.copytree(model_folder, variant)
    spec = resolve_model(str(variant), tmp_path / "c1")
    assert spec.trainer == "nnUNetTrainerNoDA"
    with caplog.at_level("INFO", logger="ctadeface.segment.fast"):
        built_by_nnunet = FaceSegmenter(spec, device="cpu", precision="fp32")
    assert "nnU-Net builds its network" in caplog.text
    plain = resolve_model(str(model_folder), tmp_path / "c2")
    expected = FaceSegmenter(plain, device="cpu", precision="fp32").predict(hu, spacing)
    assert not built_by_nnunet.exact
    assert np.array_equal(built_by_nnunet.predict(hu, spacing), expected)


def test_model_with_an_input_orientation_segments_the_turned_scan(
    model_folder: Path, tmp_path: Path
) -> None:
    """A model that declares RAS gets the scan turned to RAS and gives the mask back in the
    stored order: the same mask as the stored-order model run on the RAS array, turned back."""
    case = blob_case(9, shape=(40, 48, 36))
    stored = np.asfortranarray(case.hu.transpose(1, 2, 0)[::-1])  # axes (A, S, R), A reversed
    affine = np.array(
        [[0.0, 0.0, 4.0, -70.0], [-4.0, 0.0, 0.0, 90.0], [0.0, 5.0, 0.0, -80.0], [0, 0, 0, 1]]
    )
    spacing = (4.0, 5.0, 4.0)
    ras = shutil.copytree(model_folder, tmp_path / "ras" / model_folder.parent.name / TRAINED)
    (ras / "ctadeface_training.json").write_text(json.dumps({"input_orientation": "RAS"}))
    turned_model = FaceSegmenter(resolve_model(str(ras), tmp_path / "c1"), device="cpu")
    plain_model = FaceSegmenter(resolve_model(str(model_folder), tmp_path / "c2"), device="cpu")
    assert turned_model.describe().input_orientation == "RAS"
    mask = turned_model.predict(stored, spacing, affine=affine)
    reference = plain_model.predict(np.asfortranarray(case.hu), case.spacing)
    assert mask.any() and mask.flags.f_contiguous
    assert np.array_equal(mask, reference.transpose(1, 2, 0)[::-1])
    with pytest.raises(UsageError, match="RAS orientation: predict\\(\\) needs the scan's affine"):
        turned_model.predict(stored, spacing)


def test_describe_has_provenance(model_folder: Path, tmp_path: Path) -> None:
    spec = resolve_model(str(model_folder), tmp_path / "cache")
    segmenter = FaceSegmenter(spec, device="cpu")
    info = segmenter.describe()
    assert info.folder == str(spec.folder)
    assert info.configuration == "3d_fullres"
    assert info.folds == ("all",)
    assert info.checkpoint_sha256 == dict(spec.checkpoint_sha256)
    assert info.tta is False
    assert info.device == "cpu"
    assert segmenter.versions()["nnunetv2"] == "2.8.1"
    written = json.loads(json.dumps(to_json(info)))  # goes into JSON sidecars
    assert written["Configuration"] == "3d_fullres"
    assert from_json(ModelRecord, written) == info


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
    from ctadeface.segment.models import resolve_model
    from ctadeface.segment.segmenter import FaceSegmenter

    tiny = TINY_MODEL / "Dataset900_TinyFace"
    seg = FaceSegmenter(resolve_model(str(tiny), Path("/nonexistent-cache")), device="cpu")
    hu = np.full((20, 20, 20), -1000.0, np.float32)
    with pytest.raises(InputError, match="voxel sizes"):
        seg.predict(hu, (400.0, 400.0, 400.0))


@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_predict_never_modifies_the_scan(model_folder: Path, tmp_path: Path, dtype) -> None:
    case = blob_case(3)
    volume = case.hu.astype(dtype)
    before = volume.copy()
    spec = resolve_model(str(model_folder), tmp_path / "cache")
    FaceSegmenter(spec, device="cpu").predict(volume, case.spacing)
    assert np.array_equal(volume, before)
