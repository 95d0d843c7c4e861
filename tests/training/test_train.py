"""Tests of ctadeface.training.train: the recipe writes a model folder nnU-Net loads and
predicts with."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from ctadeface.errors import UsageError
from ctadeface.segment.models import resolve_model
from ctadeface.segment.segmenter import FaceSegmenter
from ctadeface.training.train import (
    Case,
    TrainConfig,
    dice,
    intensity_properties,
    make_plans,
    parse_args,
    sampling_weights,
    train,
)
from tests import TINY_MODEL

TINY = TINY_MODEL


def ball_case(seed: int, shape=(24, 28, 20), spacing=(5.0, 5.0, 6.0)) -> Case:
    """A ball of soft tissue in air; 'face' = the +j half of its outer shell."""
    rng = np.random.default_rng(seed)
    idx = np.indices(shape).astype(np.float32)
    centre = np.array(shape) / 2 + rng.normal(0, 1, 3)
    d = np.sqrt(sum(((idx[a] - centre[a]) / (0.35 * shape[a])) ** 2 for a in range(3)))
    hu = np.where(d < 1, 40.0, -1000.0).astype(np.float32) + rng.normal(0, 5, shape)
    face = (d < 1.2) & (d > 0.8) & (idx[1] > centre[1])
    return Case(hu=hu.astype(np.float32), face=face, spacing=spacing)


def config(out: Path, **kw) -> TrainConfig:
    base = dict(out=out, iterations=3, features=(2, 4), patch=16, spacing=6.0, batch_size=2)
    return TrainConfig(**{**base, **kw})


def test_train_writes_a_folder_nnunet_loads_and_predicts_with(tmp_path: Path) -> None:
    result = train(config(tmp_path, dataset_id=7, dataset_name="X"), [ball_case(0), ball_case(1)])
    folder = tmp_path / "Dataset007_X" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    assert result.folder == folder
    assert len(result.losses) == 3 and all(np.isfinite(result.losses))
    plans = json.loads((folder / "plans.json").read_text())
    fullres = plans["configurations"]["3d_fullres"]
    assert fullres["normalization_schemes"] == ["CTNormalization"]
    assert fullres["architecture"]["arch_kwargs"]["features_per_stage"] == [2, 4]
    assert plans["image_reader_writer"] == "SimpleITKIO"
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["labels"] == {"background": 0, "face": 1}
    assert dataset["channel_names"] == {"0": "CT"}
    checkpoint = torch.load(folder / "fold_all" / "checkpoint_final.pth", weights_only=True)
    assert checkpoint["trainer_name"] == "nnUNetTrainer"
    assert checkpoint["init_args"]["configuration"] == "3d_fullres"
    # nnU-Net builds the network from plans.json and loads the weights; it predicts a mask
    segmenter = FaceSegmenter(resolve_model(str(folder), tmp_path / "cache"), device="cpu")
    case = ball_case(5, shape=(20, 22, 18))
    mask = segmenter.predict(case.hu, case.spacing)
    assert mask.shape == case.hu.shape and mask.dtype == bool


def test_same_seed_same_weights(tmp_path: Path) -> None:
    cases = [ball_case(0), ball_case(1)]
    a = train(config(tmp_path / "a", seed=3), cases).folder / "fold_all" / "checkpoint_final.pth"
    b = train(config(tmp_path / "b", seed=3), cases).folder / "fold_all" / "checkpoint_final.pth"
    wa = torch.load(a, weights_only=True)["network_weights"]
    wb = torch.load(b, weights_only=True)["network_weights"]
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_sampling_weights_give_the_phantoms_their_share() -> None:
    w = sampling_weights(3, 5, 0.6)
    assert w is not None and w.sum() == pytest.approx(1.0)
    assert w[:3].sum() == pytest.approx(0.6) and np.ptp(w[:3]) == 0 and np.ptp(w[3:]) == 0
    assert sampling_weights(3, 5, None) is None  # uniform over all cases
    assert sampling_weights(0, 5, 0.6) is None and sampling_weights(3, 0, 0.6) is None
    with pytest.raises(UsageError, match="between 0 and 1"):
        sampling_weights(3, 5, 1.0)


def test_a_case_with_zero_weight_is_never_drawn(tmp_path: Path) -> None:
    def empty(seed: int) -> Case:  # no face, so plans (face-voxel intensities) do not change
        case = ball_case(seed)
        return Case(case.hu, np.zeros_like(case.face), case.spacing)

    def weights(out: Path, other: Case, w) -> dict:
        folder = train(config(out, seed=1), [ball_case(0), other], w).folder
        return torch.load(folder / "fold_all" / "checkpoint_final.pth", weights_only=True)[
            "network_weights"
        ]

    only_first = np.array([1.0, 0.0])
    a = weights(tmp_path / "a", empty(1), only_first)
    b = weights(tmp_path / "b", empty(2), only_first)
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = weights(tmp_path / "c", empty(1), None)
    d = weights(tmp_path / "d", empty(2), None)
    assert not all(torch.equal(c[k], d[k]) for k in c)  # drawn uniformly, the second case counts
    with pytest.raises(UsageError, match="3 sampling weights for 2 cases"):
        train(config(tmp_path / "e"), [ball_case(0), empty(1)], np.ones(3) / 3)


def test_intensity_properties_are_of_the_face_voxels() -> None:
    case = ball_case(0)
    props = intensity_properties([case])
    values = case.hu[case.face]
    assert props["mean"] == pytest.approx(float(values.mean()), rel=1e-6)
    assert props["min"] <= props["percentile_00_5"] <= props["median"] <= props["max"]


def test_patch_must_fit_the_pooling(tmp_path: Path) -> None:
    props = intensity_properties([ball_case(0)])
    with pytest.raises(UsageError, match="multiple of 4"):
        make_plans(config(tmp_path, features=(2, 4, 8), patch=18), props, (10, 10, 10))


def test_command_line_parsing(tmp_path: Path) -> None:
    cfg, args = parse_args(
        ["--out", str(tmp_path), "--features", "4,8,16", "--cases", "3", "--mirror-axes", "1"]
    )
    assert cfg.features == (4, 8, 16)
    assert cfg.cases == 3
    assert cfg.mirror_axes == (1,)
    assert cfg.out == tmp_path
    assert args.holdout == 1
    assert cfg.phantom_share is None
    assert parse_args(["--out", str(tmp_path), "--phantom-share", "0.6"])[0].phantom_share == 0.6


def test_orientation_on_the_command_line(tmp_path: Path) -> None:
    assert parse_args(["--out", str(tmp_path)])[0].orientation is None
    assert parse_args(["--out", str(tmp_path), "--orientation", "ras"])[0].orientation == "RAS"
    assert parse_args(["--out", str(tmp_path), "--orientation", "stored"])[0].orientation is None
    with pytest.raises(SystemExit):
        parse_args(["--out", str(tmp_path), "--orientation", "RAR"])


def _stored_as(case: Case, perm: tuple[int, int, int], flip: int) -> Case:
    """``case`` (RAS order) stored with its axes in order ``perm`` and axis ``flip`` reversed,
    with the affine that says so."""
    hu = np.flip(case.hu.transpose(perm), flip)
    face = np.flip(case.face.transpose(perm), flip)
    spacing = tuple(case.spacing[p] for p in perm)
    affine = np.eye(4)
    affine[:3, :3] = 0.0
    for axis, world in enumerate(perm):
        affine[world, axis] = spacing[axis] * (-1.0 if axis == flip else 1.0)
    return Case(
        hu=np.ascontiguousarray(hu), face=np.ascontiguousarray(face), spacing=spacing, affine=affine
    )


def test_oriented_turns_the_arrays_to_the_codes() -> None:
    from ctadeface.training.train import oriented

    ras = ball_case(4, shape=(20, 24, 28), spacing=(4.0, 5.0, 6.0))
    stored = _stored_as(ras, (2, 0, 1), 1)
    turned = oriented(stored, "RAS")
    np.testing.assert_array_equal(turned.hu, ras.hu)
    np.testing.assert_array_equal(turned.face, ras.face)
    assert turned.spacing == ras.spacing
    assert oriented(stored, None) is stored and oriented(ras, "RAS") is ras  # no affine: as is


def test_a_model_trained_in_ras_segments_any_stored_order_alike(tmp_path: Path) -> None:
    """Trained with an orientation, the model declares it; the same scan stored in two axis
    orders gets the same mask (the network sees the same array)."""
    cases = [_stored_as(ball_case(s), (1, 2, 0), 2) for s in (0, 1)]
    folder = train(config(tmp_path, orientation="RAS", iterations=2), cases).folder
    record = json.loads((folder / "ctadeface_training.json").read_text())
    assert record["input_orientation"] == "RAS"
    spec = resolve_model(str(folder), tmp_path / "cache")
    assert spec.orientation == "RAS"
    segmenter = FaceSegmenter(spec, device="cpu", precision="fp32")
    scan = ball_case(6, shape=(20, 22, 18))
    a = _stored_as(scan, (2, 0, 1), 0)
    b = _stored_as(scan, (0, 2, 1), 2)
    mask_a = segmenter.predict(a.hu, a.spacing, affine=a.affine)
    mask_b = segmenter.predict(b.hu, b.spacing, affine=b.affine)
    assert mask_a.shape == a.hu.shape and mask_b.shape == b.hu.shape
    back_a = np.flip(mask_a, 0).transpose(1, 2, 0)  # to the RAS order of `scan`
    back_b = np.flip(mask_b, 2).transpose(0, 2, 1)
    assert 0 < back_a.sum() < back_a.size  # a mask that depends on the voxels
    np.testing.assert_array_equal(back_a, back_b)


def test_dice() -> None:
    a = np.zeros((4, 4), bool)
    b = a.copy()
    assert dice(a, b) == 1.0
    a[0, :2] = True
    b[0, 1:3] = True
    assert dice(a, b) == pytest.approx(0.5)


def test_committed_tiny_model_matches_its_readme() -> None:
    readme = TINY / "README.md"
    if not readme.exists():
        pytest.skip("tests/data/tiny_model not built yet")
    listed = dict(
        (path, digest)
        for digest, path in re.findall(r"^([0-9a-f]{64})  (\S+)$", readme.read_text(), re.M)
    )
    assert listed, "README.md lists sha256 sums"
    for path, digest in listed.items():
        assert hashlib.sha256((TINY / path).read_bytes()).hexdigest() == digest, path
    total = sum(p.stat().st_size for p in TINY.rglob("*") if p.is_file())
    assert total < 2 * 1024**2


def test_committed_tiny_model_finds_the_face_of_a_held_out_phantom(tmp_path: Path) -> None:
    if not (TINY / "README.md").exists():
        pytest.skip("tests/data/tiny_model not built yet")
    from ctadeface.training.train import phantom_cases

    spec = resolve_model(str(TINY), tmp_path / "cache")
    segmenter = FaceSegmenter(spec, device="cpu")
    (case,) = phantom_cases([2_000_017], spacing_range=(2.5, 5.0))
    mask = segmenter.predict(case.hu, case.spacing)
    assert dice(mask, case.face) > 0.5


def test_real_cases_label_once_and_read_the_cache(tmp_path: Path, monkeypatch) -> None:
    import nibabel as nib

    from ctadeface.training import annotate
    from ctadeface.training.phantom import make_phantom
    from ctadeface.training.train import real_cases, select_real

    ph = make_phantom(PhantomSpec_small())
    nib.save(ph.to_nifti(), tmp_path / "head_a.nii.gz")
    other = make_phantom(PhantomSpec_small(), noise_seed=5)  # other content, other cache key
    nib.save(other.to_nifti(), tmp_path / "skip_b.nii.gz")
    calls = []

    def fake(hu, affine, params=None):
        calls.append(hu.shape)
        return ph.face

    monkeypatch.setattr(annotate, "annotate_face", fake)
    paths = select_real([str(tmp_path / "*.nii.gz")], exclude=["skip"])
    assert [p.name for p in paths] == ["head_a.nii.gz"]
    first = real_cases(paths, tmp_path / "cache")
    second = real_cases(paths, tmp_path / "cache")
    assert len(calls) == 1  # the second call read the cache
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    for cases in (first, second):
        (case,) = cases
        np.testing.assert_array_equal(case.face, ph.face)
        np.testing.assert_allclose(case.hu, ph.hu(), atol=1e-3)
        np.testing.assert_allclose(case.spacing, ph.spec.spacing, rtol=1e-5)
    monkeypatch.setattr(annotate, "annotate_face", lambda hu, affine, params=None: hu < -1e9)
    assert real_cases([tmp_path / "skip_b.nii.gz"], tmp_path / "cache") == []  # no face


def PhantomSpec_small():
    from ctadeface.training.phantom import PhantomSpec

    return PhantomSpec(shape=(40, 44, 42), spacing=(5.0, 5.0, 5.0))


def test_label_gate_rejects_huge_tall_or_runaway_labels() -> None:
    from ctadeface.training.train import LabelGate, label_problem

    face = np.zeros((40, 40, 100), bool)
    aff = np.diag([2.0, 2.0, 2.5, 1.0])
    face[10:30, 20:35, 30:70] = True  # 40 x 30 x 100 mm = 120 mL, 100 mm tall
    assert label_problem(face, aff, LabelGate()) is None
    assert "mL" in label_problem(face, aff, LabelGate(max_ml=100.0))
    tall = face.copy()
    tall[20, 25, 0:100] = True  # a thin tube down the neck: 250 mm tall
    assert "tall" in label_problem(tall, aff, LabelGate())
    runaway = face.copy()
    runaway[20, 25, 0:30] = True  # 172 mm, down to the bottom slice
    assert label_problem(runaway, aff, LabelGate()) is None  # not taller than 180 mm
    assert "bottom" in label_problem(runaway, aff, LabelGate(bottom_tall_mm=150.0))
    flipped = np.diag([2.0, 2.0, -2.5, 1.0])  # superior is low k: the bottom is k = 99
    assert label_problem(runaway[:, :, ::-1], flipped, LabelGate(bottom_tall_mm=150.0))


def test_face_free_crops_hold_no_face_and_keep_their_distance() -> None:
    from ctadeface.training.train import face_free_crops

    case = ball_case(3, shape=(40, 44, 48), spacing=(4.0, 4.0, 4.0))
    crops = face_free_crops(case, gap_mm=8.0, min_mm=20.0)
    assert crops  # the face is the +j half of the shell: at least the -j side is free
    for c in crops:
        assert not c.face.any() and c.face.shape == c.hu.shape and c.spacing == case.spacing
        assert min(s * n for s, n in zip(c.spacing, c.hu.shape, strict=True)) >= 20.0
    assert face_free_crops(Case(case.hu, np.zeros_like(case.face), case.spacing)) == []


def test_negative_cases_are_empty_reproducible_and_trunks_have_a_body() -> None:
    from ctadeface.training.train import negative_cases, trunk_case

    cases = [ball_case(s, shape=(40, 44, 48), spacing=(4.0, 4.0, 4.0)) for s in (1, 2)]
    a, b = negative_cases(cases, 5, seed=3), negative_cases(cases, 5, seed=3)
    assert len(a) == 5 and all(c.face.sum() <= 0.01 * c.face.size for c in a)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.hu, y.hu)
    t = trunk_case(0)
    assert t.hu.ndim == 3 and not t.face.any() and t.face.shape == t.hu.shape


def test_skull_top_phantom_lies_above_the_face() -> None:
    from ctadeface.training.train import skull_top_case

    c = skull_top_case(801, max_voxels=300_000)
    assert c.hu.shape == c.face.shape and (c.hu > -500).mean() > 0.05  # vault and brain
    assert c.face.sum() <= 0.01 * c.face.size  # at most a corner of the forehead when tilted
