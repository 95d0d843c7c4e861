"""A short training recipe that writes an nnU-Net v2 trained-model folder.

The folder (``<out>/DatasetNNN_NAME/nnUNetTrainer__nnUNetPlans__3d_fullres/``) holds
``plans.json``, ``dataset.json`` and ``fold_all/checkpoint_final.pth``, exactly what
``nnUNetPredictor.initialize_from_trained_model_folder`` reads; the network is nnU-Net's default
``PlainConvUNet`` built from the plans by nnU-Net itself, so ``nnUNetv2_predict`` (and
``FaceSegmenter``) run it unchanged.

Training cases are preprocessed by nnU-Net's own ``DefaultPreprocessor.run_case_npy`` (transpose,
crop to nonzero, CT normalisation, resampling to the target spacing), fed exactly as inference
feeds them, so what the network sees in training is what it sees at inference. The loop is a
plain one: random patches (a third centred on the face), optional mirroring, Dice + cross-entropy,
Adam, everything seeded, CPU.

``python -m ctadeface.training.train --out DIR --seed 0 --cases 8 --iterations 300 --spacing 4
--features 4,8,16,32`` trains on ``ctadeface.training.phantom`` heads and logs the held-out Dice.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ctadeface import body
from ctadeface.errors import UsageError
from ctadeface.io import sha256_file
from ctadeface.segment.exact import quiet
from ctadeface.segment.models import TRAINING_RECORD
from ctadeface.segment.orientation import Orientation, check_codes

log = logging.getLogger(__name__)

TRAINER = "nnUNetTrainer"
PLANS_NAME = "nnUNetPlans"
CONFIGURATION = "3d_fullres"
NETWORK_CLASS = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
LABELS = {"background": 0, "face": 1}
#: The planner named in the plans.json this recipe writes (the shipped model's plans.json, whose
#: sha256 the registry pins, names it so).
PLANNER = "ctadeface.train"


@dataclass(frozen=True)
class TrainConfig:
    """What to train. Sizes in voxels of the target grid, spacing in mm (isotropic).

    ``orientation``: axis codes (e.g. ``RAS``) every case is turned to before preprocessing;
    the model folder declares them (``input_orientation``) so that inference turns scans the
    same way. None: the stored array order, as nnU-Net trains and predicts.
    """

    out: Path
    seed: int = 0
    cases: int = 8
    iterations: int = 300
    spacing: float = 4.0
    features: tuple[int, ...] = (4, 8, 16, 32)
    patch: int = 48
    batch_size: int = 2
    learning_rate: float = 3e-3
    dataset_id: int = 900
    dataset_name: str = "TinyFace"
    mirror_axes: tuple[int, ...] = ()
    foreground_fraction: float = 0.33
    threads: int = 1
    phantom_share: float | None = None
    orientation: str | None = None


@dataclass(frozen=True)
class Case:
    """One training image: float32 HU and the bool face mask, both in stored array order
    (i, j, k); ``spacing`` in mm per array axis; ``affine``: voxel -> world RAS+ mm (only its
    axis directions are used: they turn the arrays to the model's input orientation). None: the
    array axes already run along that orientation (or it does not matter: synthetic trunk
    sections, drawn in random axis order)."""

    hu: np.ndarray
    face: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray | None = None


@dataclass(frozen=True)
class TrainResult:
    """The written model folder and how training went."""

    folder: Path
    seconds: float
    losses: tuple[float, ...] = field(repr=False)


@contextlib.contextmanager
def seeded(seed: int, threads: int) -> Iterator[None]:
    """Seed python, numpy and torch, ask torch for deterministic kernels and use ``threads`` CPU
    threads, for the duration only: the process's random states, thread count and determinism
    setting are restored afterwards."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    previous_threads = torch.get_num_threads()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.set_num_threads(previous_threads)


def intensity_properties(cases: Sequence[Case]) -> dict[str, float]:
    """nnU-Net's CT fingerprint: HU statistics of the foreground (face) voxels of all cases."""
    values = np.concatenate([c.hu[c.face].astype(np.float64) for c in cases])
    if values.size == 0:
        raise UsageError("training cases have no face voxels")
    low, median, high = np.percentile(values, (0.5, 50.0, 99.5))
    return {
        "max": float(values.max()),
        "mean": float(values.mean()),
        "median": float(median),
        "min": float(values.min()),
        "percentile_00_5": float(low),
        "percentile_99_5": float(high),
        "std": float(values.std()),
    }


def _architecture(config: TrainConfig) -> dict[str, Any]:
    n = len(config.features)
    return {
        "network_class_name": NETWORK_CLASS,
        "arch_kwargs": {
            "n_stages": n,
            "features_per_stage": list(config.features),
            "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[3, 3, 3]] * n,
            "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n - 1),
            "n_conv_per_stage": [2] * n,
            "n_conv_per_stage_decoder": [2] * (n - 1),
            "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def make_plans(
    config: TrainConfig, intensity: dict[str, float], median_shape: Sequence[int]
) -> dict[str, Any]:
    """plans.json for one ``3d_fullres`` configuration, as nnU-Net 2.8's planner writes it.

    ``median_shape``: median image shape on the target grid, (z, y, x) as nnU-Net orders it.
    """
    divisor = 2 ** (len(config.features) - 1)
    if config.patch % divisor:
        raise UsageError(f"--patch {config.patch} must be a multiple of {divisor}")
    spacing = [float(config.spacing)] * 3
    resampling_data = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    resampling_seg = {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None}
    resampling_prob = {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None}
    fullres = {
        "data_identifier": f"{PLANS_NAME}_{CONFIGURATION}",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": config.batch_size,
        "patch_size": [config.patch] * 3,
        "median_image_size_in_voxels": [int(s) for s in median_shape],
        "spacing": spacing,
        "normalization_schemes": ["CTNormalization"],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": resampling_data,
        "resampling_fn_seg_kwargs": resampling_seg,
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": resampling_prob,
        "architecture": _architecture(config),
        "batch_dice": True,
    }
    return {
        "dataset_name": dataset_folder_name(config),
        "plans_name": PLANS_NAME,
        "original_median_spacing_after_transp": spacing,
        "original_median_shape_after_transp": [int(s) for s in median_shape],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {CONFIGURATION: fullres},
        "experiment_planner_used": PLANNER,
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": intensity},
    }


def make_dataset_json(num_training: int) -> dict[str, Any]:
    """dataset.json: one CT channel, labels background/face, ``.nii.gz`` files."""
    return {
        "channel_names": {"0": "CT"},
        "labels": dict(LABELS),
        "numTraining": int(num_training),
        "file_ending": ".nii.gz",
        "name": "ctadeface face mask",
        "licence": "Apache-2.0",
    }


def dataset_folder_name(config: TrainConfig) -> str:
    return f"Dataset{config.dataset_id:03d}_{config.dataset_name}"


def model_folder(config: TrainConfig) -> Path:
    """``<out>/DatasetNNN_NAME/nnUNetTrainer__nnUNetPlans__3d_fullres``."""
    return config.out / dataset_folder_name(config) / f"{TRAINER}__{PLANS_NAME}__{CONFIGURATION}"


def build_network(plans: dict[str, Any]) -> torch.nn.Module:
    """The network nnU-Net builds from these plans (no deep supervision, as at inference)."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    arch = plans["configurations"][CONFIGURATION]["architecture"]
    return get_network_from_plans(
        arch["network_class_name"],
        arch["arch_kwargs"],
        arch["_kw_requires_import"],
        input_channels=1,
        output_channels=len(LABELS),
        allow_init=True,
        deep_supervision=False,
    )


def oriented(case: Case, codes: str | None) -> Case:
    """``case`` with its arrays turned to the orientation ``codes`` (see
    :mod:`ctadeface.segment.orientation`); ``case`` itself when ``codes`` or its affine is None."""
    if codes is None or case.affine is None:
        return case
    turn = Orientation.of(case.affine, codes)
    if turn.identity:
        return case
    return Case(
        hu=turn.forward(case.hu),
        face=turn.forward(case.face),
        spacing=turn.spacing(case.spacing),
        affine=None,
    )


def preprocess(
    case: Case, plans: dict[str, Any], dataset_json: dict[str, Any], orientation: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """(image (1, z, y, x) float32, labels (z, y, x) uint8) on the target grid, made by
    nnU-Net's DefaultPreprocessor from the arrays nnU-Net's NIfTI reader would give for the
    case turned to ``orientation`` (None: as stored) (labels are kept small: hundreds of cases
    stay in memory during training)."""
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    manager = PlansManager(plans)
    configuration = manager.get_configuration(CONFIGURATION)
    case = oriented(case, orientation)
    image = case.hu.astype(np.float32).transpose(2, 1, 0)[None]
    seg = case.face.astype(np.int8).transpose(2, 1, 0)[None]
    properties = {"spacing": [float(s) for s in case.spacing[::-1]]}
    with quiet("preprocess", log):
        data, labels, _ = DefaultPreprocessor(verbose=False).run_case_npy(
            image, seg, properties, manager, configuration, dataset_json
        )
    return data.astype(np.float32), np.clip(labels[0], 0, None).astype(np.uint8)


def _sample_patch(
    data: np.ndarray,
    labels: np.ndarray,
    patch: int,
    rng: np.random.Generator,
    on_face: bool,
    mirror_axes: tuple[int, ...],
) -> tuple[np.ndarray, np.ndarray]:
    """A patch³ crop (zero-padded like nnU-Net's loader), centred on a face voxel if asked."""
    shape = np.array(labels.shape)
    if on_face and labels.any():
        where = np.argwhere(labels > 0)
        centre = where[rng.integers(len(where))]
        start = centre - patch // 2
    else:
        start = np.array([rng.integers(min(0, s - patch), max(0, s - patch) + 1) for s in shape])
    out_data = np.zeros((1, patch, patch, patch), np.float32)
    out_labels = np.zeros((patch, patch, patch), np.int64)
    src = tuple(slice(max(a, 0), min(a + patch, s)) for a, s in zip(start, shape, strict=True))
    dst = tuple(slice(sl.start - a, sl.stop - a) for sl, a in zip(src, start, strict=True))
    out_data[(slice(None), *dst)] = data[(slice(None), *src)]
    out_labels[dst] = labels[src]
    for axis in mirror_axes:
        if rng.random() < 0.5:
            out_data = np.flip(out_data, axis + 1)
            out_labels = np.flip(out_labels, axis)
    return np.ascontiguousarray(out_data), np.ascontiguousarray(out_labels)


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy + (1 - soft Dice of the face class over the whole batch)."""
    ce = F.cross_entropy(logits, target)
    prob = torch.softmax(logits, 1)[:, 1]
    fg = (target == 1).float()
    dice = (2 * (prob * fg).sum() + 1) / (prob.sum() + fg.sum() + 1)
    return ce + 1 - dice


def sampling_weights(
    n_phantoms: int, n_other: int, phantom_share: float | None
) -> np.ndarray | None:
    """Probability of drawing each case (phantoms first, then the others) for a patch.

    ``None`` (or no phantoms, or no others) means every case equally often. Otherwise the
    phantoms together get ``phantom_share`` of the draws and the other cases the rest, each
    group drawn uniformly.
    """
    if phantom_share is not None and not 0.0 < phantom_share < 1.0:
        raise UsageError(f"--phantom-share {phantom_share}: must lie strictly between 0 and 1")
    if phantom_share is None or n_phantoms == 0 or n_other == 0:
        return None
    return np.concatenate(
        [
            np.full(n_phantoms, phantom_share / n_phantoms),
            np.full(n_other, (1.0 - phantom_share) / n_other),
        ]
    )


def train(
    config: TrainConfig, cases: Sequence[Case], weights: np.ndarray | None = None
) -> TrainResult:
    """Train on ``cases`` and write the model folder; returns it with the loss history.

    ``weights``: the probability of drawing each case for a patch (default: uniform)."""
    start = time.monotonic()
    if not cases:
        raise UsageError("no training cases")
    if weights is not None and len(weights) != len(cases):
        raise UsageError(f"{len(weights)} sampling weights for {len(cases)} cases")
    with seeded(config.seed, config.threads):
        return _train(config, cases, weights, start)


def _train(
    config: TrainConfig, cases: Sequence[Case], weights: np.ndarray | None, start: float
) -> TrainResult:
    dataset_json = make_dataset_json(len(cases))
    intensity = intensity_properties(cases)
    target_shapes = [
        [round(n * s / config.spacing) for n, s in zip(*_turned_shape(c, config), strict=True)]
        for c in cases
    ]
    plans = make_plans(config, intensity, np.median(np.array(target_shapes), 0).astype(int))
    prepared = [preprocess(c, plans, dataset_json, config.orientation) for c in cases]
    log.info("preprocessed %d cases, shapes %s", len(prepared), [p[1].shape for p in prepared])
    network = build_network(plans)
    network.train()
    optimiser = torch.optim.Adam(network.parameters(), lr=config.learning_rate)
    schedule = torch.optim.lr_scheduler.PolynomialLR(optimiser, config.iterations, power=0.9)
    rng = np.random.default_rng(config.seed)
    losses: list[float] = []
    for iteration in range(config.iterations):
        batch = [
            _sample_patch(
                *prepared[
                    rng.integers(len(prepared))
                    if weights is None
                    else rng.choice(len(prepared), p=weights)
                ],
                config.patch,
                rng,
                on_face=rng.random() < config.foreground_fraction,
                mirror_axes=config.mirror_axes,
            )
            for _ in range(config.batch_size)
        ]
        x = torch.from_numpy(np.stack([b[0] for b in batch]))
        y = torch.from_numpy(np.stack([b[1] for b in batch]))
        optimiser.zero_grad(set_to_none=True)
        loss = dice_ce_loss(network(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 12.0)
        optimiser.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if iteration % 50 == 0 or iteration == config.iterations - 1:
            log.info("iteration %d/%d loss %.4f", iteration + 1, config.iterations, losses[-1])
    folder = write_model_folder(config, plans, dataset_json, network.state_dict(), losses)
    seconds = time.monotonic() - start
    log.info("trained in %.1f s; model folder %s", seconds, folder)
    return TrainResult(folder=folder, seconds=seconds, losses=tuple(losses))


def _turned_shape(case: Case, config: TrainConfig) -> tuple[list[int], list[float]]:
    """(shape, spacing) of ``case`` in the model's orientation, nnU-Net's (z, y, x) order."""
    shape, spacing = list(case.hu.shape), list(case.spacing)
    if config.orientation is not None and case.affine is not None:
        turn = Orientation.of(case.affine, config.orientation)
        shape, spacing = list(turn.permute(shape)), list(turn.spacing(spacing))
    return shape[::-1], spacing[::-1]


def write_model_folder(
    config: TrainConfig,
    plans: dict[str, Any],
    dataset_json: dict[str, Any],
    weights: dict[str, torch.Tensor],
    losses: Sequence[float] = (),
) -> Path:
    """Write plans.json, dataset.json, fold_all/checkpoint_final.pth (the keys nnUNetPredictor
    reads) and ctadeface_training.json (the recipe); returns the model folder."""
    folder = model_folder(config)
    (folder / "fold_all").mkdir(parents=True, exist_ok=True)
    (folder / "plans.json").write_text(json.dumps(plans, indent=4, sort_keys=False) + "\n")
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=4) + "\n")
    checkpoint = {
        "network_weights": weights,  # as nnU-Net saves it (encoder tensors shared, not copied)
        "init_args": {
            "plans": plans,
            "configuration": CONFIGURATION,
            "fold": "all",
            "dataset_json": dataset_json,
        },
        "trainer_name": TRAINER,
        "inference_allowed_mirroring_axes": tuple(config.mirror_axes) or None,
        "current_epoch": config.iterations,
    }
    torch.save(checkpoint, folder / "fold_all" / "checkpoint_final.pth")
    recipe = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
    recipe.pop("out")
    record: dict[str, Any] = {"recipe": recipe, "final_loss": losses[-1] if losses else None}
    if config.orientation is not None:  # read by models.input_orientation
        record["input_orientation"] = config.orientation
    (folder / TRAINING_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return folder


# --- phantoms and the command line ------------------------------------------------------------


def _spacing(values: Sequence[float] | np.ndarray) -> tuple[float, float, float]:
    """mm per axis as the three floats a Case holds."""
    a, b, c = (float(v) for v in values)
    return a, b, c


def phantom_cases(seeds: Sequence[int], **draw: Any) -> list[Case]:
    """Training cases from ``ctadeface.training.phantom`` (one per seed); ``draw`` goes to its
    ``draw_spec`` (shape, spacing, spacing_range, ...); None values are left out."""
    from ctadeface.training.phantom import make_phantom

    kwargs = {k: v for k, v in draw.items() if v is not None}
    cases = []
    for seed in seeds:
        ph = make_phantom(seed, **kwargs)
        zooms = np.sqrt((np.asarray(ph.affine)[:3, :3] ** 2).sum(0))
        cases.append(
            Case(
                hu=np.asarray(ph.hu(), np.float32),
                face=np.asarray(ph.face, bool),
                spacing=_spacing(zooms),
                affine=np.asarray(ph.affine, float),
            )
        )
    return cases


#: Bump when the labels of :func:`real_cases` change for reasons other than the annotator's
#: parameters (which are part of the cache key).
LABEL_CACHE_VERSION = 3  # bumped with every change of the masks the annotator's code draws


def label_cache_path(path: Path, cache_dir: Path) -> Path:
    """``cache_dir/<sha256 of file>-<sha256 of annotator parameters>.npz``: the annotator's
    face mask of ``path``, valid as long as the file and the annotator's parameters are."""
    import hashlib

    from ctadeface.training.annotate import AnnotateParams

    params = f"{LABEL_CACHE_VERSION}:{AnnotateParams()!r}".encode()
    return cache_dir / f"{sha256_file(path)}-{hashlib.sha256(params).hexdigest()[:16]}.npz"


@dataclass(frozen=True)
class LabelGate:
    """Plausibility limits of an annotator label (a face mask is about 0.4-1.3 L and spans the
    forehead to the hyoid, about 200 mm at most): labels beyond them are annotator failures
    (neck, shoulders, tongue or a tube labelled as face) and are not trained on. A mask taller
    than ``bottom_tall_mm`` that runs out of the bottom of the scan (within ``bottom_gap_mm``
    of its lowest voxel centre) follows the neck down. Volumes in mL, lengths in mm."""

    max_ml: float = 1500.0
    max_height_mm: float = 230.0
    bottom_gap_mm: float = 5.0
    bottom_tall_mm: float = 180.0


def label_problem(face: np.ndarray, affine: np.ndarray, gate: LabelGate) -> str | None:
    """Why the annotator's label ``face`` (stored order; ``affine`` voxel -> RAS+ mm) fails
    ``gate``, or None when it is plausible. Height: extent of the voxel centres along world S."""
    affine = np.asarray(affine, float)
    ml = float(face.sum()) * abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    if ml > gate.max_ml:
        return f"{ml:.0f} mL > {gate.max_ml:.0f} mL"
    idx = np.argwhere(face)
    if not len(idx):
        return None
    z = idx @ affine[2, :3] + affine[2, 3]
    height = float(z.max() - z.min())
    if height > gate.max_height_mm:
        return f"{height:.0f} mm tall > {gate.max_height_mm:.0f} mm"
    n = np.array(face.shape) - 1
    corners = np.array([[i, j, k] for i in (0, n[0]) for j in (0, n[1]) for k in (0, n[2])])
    gap = float(z.min() - (corners @ affine[2, :3] + affine[2, 3]).min())
    if gap <= gate.bottom_gap_mm and height > gate.bottom_tall_mm:
        return f"{height:.0f} mm tall and runs out of the bottom of the scan"
    return None


def real_cases(
    paths: Sequence[Path], cache_dir: Path, gate: LabelGate | None = LabelGate()
) -> list[Case]:
    """Training cases from real CT files labelled by ``ctadeface.training.annotate.annotate_face``.

    Each label is cached (compressed ``.npz`` of the bool mask, stored array order) under
    ``cache_dir``, keyed by the file's sha256 and the annotator's parameters, so a rerun only
    reads. Files whose annotation is empty (no face found) or fails ``gate`` (see
    :func:`label_problem`; None: no check) are skipped with a warning: they would teach the
    network that a face is background, or that the neck is face.
    """
    from ctadeface.io import load_ct
    from ctadeface.training.annotate import annotate_face

    cache_dir.mkdir(parents=True, exist_ok=True)
    cases = []
    for path in paths:
        image = load_ct(Path(path))
        hu = np.asarray(image.hu(), np.float32)
        cached = label_cache_path(Path(path), cache_dir)
        if cached.is_file():
            with np.load(cached) as stored:
                face = stored["face"].astype(bool)
        else:
            face = annotate_face(hu, image.affine)
            tmp = cached.with_name(f"{cached.stem}.{os.getpid()}.tmp.npz")
            np.savez_compressed(tmp, face=face)
            tmp.replace(cached)
        if face.shape != hu.shape:
            raise UsageError(f"label cache {cached} does not match {path}; delete it")
        if not face.any():
            log.warning("%s: the annotator found no face; not used for training", path)
            continue
        problem = None if gate is None else label_problem(face, image.affine, gate)
        if problem is not None:
            log.warning("%s: implausible annotator label (%s); not used", path, problem)
            continue
        spacing = _spacing([abs(s) for s in image.spacing])
        cases.append(Case(hu=hu, face=face, spacing=spacing, affine=image.affine))
        log.info("real case %s: %d face voxels", path, int(face.sum()))
    return cases


def face_free_crops(
    case: Case, gap_mm: float = 15.0, min_mm: float = 40.0, min_body_ml: float = 100.0
) -> list[Case]:
    """Crops of ``case`` that hold no face: for each array axis, the slab before and the slab
    after the face mask's extent, ``gap_mm`` away from it, at least ``min_mm`` thick and with at
    least ``min_body_ml`` of body (> -500 HU; slabs of air only are left out): skull top and
    brain, neck and shoulders, back of the head, ears; with empty labels. They teach the
    network that a field of view without a face gives an empty mask."""
    if not case.face.any():
        return []
    out = []
    for axis, occupied in enumerate(body.occupied(case.face)):
        gap = math.ceil(gap_mm / case.spacing[axis])
        need = math.ceil(min_mm / case.spacing[axis])
        n = case.face.shape[axis]
        for lo, hi in ((0, int(occupied[0]) - gap), (int(occupied[-1]) + 1 + gap, n)):
            if hi - lo < need:
                continue
            sl = [slice(None)] * 3
            sl[axis] = slice(lo, hi)
            hu = np.ascontiguousarray(case.hu[tuple(sl)])
            if (hu > -500.0).sum() * float(np.prod(case.spacing)) < 1000.0 * min_body_ml:
                continue
            empty = np.zeros(hu.shape, bool)
            out.append(Case(hu=hu, face=empty, spacing=case.spacing, affine=case.affine))
    return out


def trunk_case(seed: int) -> Case:
    """A synthetic chest/abdomen section (:func:`ctadeface.training.phantom.trunk_section`) as a
    training case with an empty label."""
    from ctadeface.training.phantom import trunk_section

    hu, spacing = trunk_section(seed)
    return Case(hu=hu, face=np.zeros(hu.shape, bool), spacing=spacing)


def skull_top_case(seed: int, max_voxels: int = 1_500_000) -> Case:
    """A phantom whose field of view (40-90 mm along the axial axis) lies above the forehead
    part of the mask: brain and vault, with the exact (empty or nearly empty, when tilted)
    label. Seeds are drawn like :func:`phantom_cases`' (same draw, other field of view)."""
    import dataclasses

    from ctadeface.training.phantom import Z_FOREHEAD, build, draw_spec

    rng = np.random.default_rng(seed + 104729)
    spec = draw_spec(seed, max_voxels=max_voxels, crop=False)
    axial = spec.axis_map.index(2)
    extent = float(rng.uniform(40.0, 90.0))
    shape = list(spec.shape)
    shape[axial] = max(8, round(extent / spec.spacing[axial]))
    centre = (spec.fov_center_mm[0], spec.fov_center_mm[1], Z_FOREHEAD + 8.0 + extent / 2.0)
    ph = build(
        dataclasses.replace(spec, shape=(shape[0], shape[1], shape[2]), fov_center_mm=centre)
    )
    zooms = np.sqrt((np.asarray(ph.affine)[:3, :3] ** 2).sum(0))
    return Case(
        hu=np.asarray(ph.hu(), np.float32),
        face=np.asarray(ph.face, bool),
        spacing=_spacing(zooms),
        affine=np.asarray(ph.affine, float),
    )


def negative_cases(cases: Sequence[Case], n: int, seed: int) -> list[Case]:
    """``n`` face-free cases, reproducible from ``seed``: a random choice of
    :func:`face_free_crops` of ``cases`` (about three in five), :func:`skull_top_case`
    phantoms and :func:`trunk_case` sections (one in five each)."""
    if n <= 0:
        return []
    rng = np.random.default_rng(seed + 7919)
    n_other = n // 5
    crops = [c for case in cases for c in face_free_crops(case)]
    picked = [crops[i] for i in rng.permutation(len(crops))[: n - 2 * n_other]]
    tops = [skull_top_case(seed * 1000 + 800 + i) for i in range(n_other)]
    trunks = [trunk_case(seed * 1000 + 500 + i) for i in range(n - len(picked) - len(tops))]
    return picked + tops + trunks


def select_real(
    globs: Sequence[str], exclude: Sequence[str] = (), limit: int | None = None
) -> list[Path]:
    """Files matching any of ``globs`` (sorted, unique) whose name contains none of
    ``exclude``; the first ``limit`` of them when given."""
    import glob

    found = sorted({Path(p) for g in globs for p in glob.glob(g)})
    kept = [p for p in found if not any(e in p.name for e in exclude)]
    return kept if limit is None else kept[:limit]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two bool masks (1.0 when both are empty)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers: {text}") from err


def _float_tuple(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers: {text}") from err


def _orientation(text: str) -> str | None:
    if text.lower() == "stored":
        return None
    try:
        return check_codes(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def parse_args(argv: Sequence[str] | None) -> tuple[TrainConfig, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m ctadeface.training.train", description=__doc__)
    p.add_argument("--out", type=Path, required=True, help="where DatasetNNN_NAME/ goes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cases", "--phantom-cases", dest="cases", type=int, default=8, help="phantoms")
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--spacing", type=float, default=4.0, help="target spacing, mm (isotropic)")
    p.add_argument("--features", type=_int_tuple, default=(4, 8, 16, 32))
    p.add_argument("--patch", type=int, default=48, help="patch edge, voxels")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--dataset-id", type=int, default=900)
    p.add_argument("--dataset-name", default="TinyFace")
    p.add_argument(
        "--mirror-axes",
        type=_int_tuple,
        default=(),
        help="patch axes (z, y, x of the oriented array: with RAS, 2 = left-right) to mirror",
    )
    p.add_argument(
        "--orientation",
        type=_orientation,
        default=None,
        help="axis codes (e.g. RAS) the arrays are turned to before training and inference; "
        "default 'stored': as stored, like nnU-Net's readers",
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--phantom-shape", type=_int_tuple, default=None)
    p.add_argument("--phantom-spacing", type=_float_tuple, default=None)
    p.add_argument("--phantom-spacing-range", type=_float_tuple, default=None, help="LO,HI mm")
    p.add_argument("--phantom-max-voxels", type=int, default=None, help="phantom size cap")
    p.add_argument("--foreground-fraction", type=float, default=0.33)
    p.add_argument(
        "--phantom-share",
        type=float,
        default=None,
        help="fraction of patches drawn from phantoms (default: every case equally often)",
    )
    p.add_argument("--holdout", type=int, default=1, help="held-out phantoms to score")
    p.add_argument(
        "--real-glob",
        action="append",
        default=[],
        help="real CT files (NIfTI) to label with ctadeface.training.annotate and train on "
        "(repeatable)",
    )
    p.add_argument(
        "--exclude-real",
        action="append",
        default=[],
        help="leave out real files whose name contains this (repeatable; held-out validation)",
    )
    p.add_argument("--real-limit", type=int, default=None, help="at most this many real files")
    p.add_argument(
        "--face-free",
        type=int,
        default=0,
        help="add this many face-free cases (crops beside the face, trunk sections; empty labels)",
    )
    p.add_argument(
        "--max-label-ml",
        type=float,
        default=LabelGate.max_ml,
        help="real labels larger than this (mL) are annotator failures and are left out",
    )
    p.add_argument(
        "--label-cache",
        type=Path,
        default=None,
        help="where the annotator's labels are cached (default OUT/.labels)",
    )
    args = p.parse_args(argv)
    config = TrainConfig(
        out=args.out,
        seed=args.seed,
        cases=args.cases,
        iterations=args.iterations,
        spacing=args.spacing,
        features=args.features,
        patch=args.patch,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        dataset_id=args.dataset_id,
        dataset_name=args.dataset_name,
        mirror_axes=args.mirror_axes,
        foreground_fraction=args.foreground_fraction,
        threads=args.threads,
        phantom_share=args.phantom_share,
        orientation=args.orientation,
    )
    return config, args


def main(argv: Sequence[str] | None = None) -> int:
    """Train on phantoms (and real CTs labelled by the annotator), write the model folder, log
    the Dice on held-out phantoms."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    config, args = parse_args(argv)
    torch.set_num_threads(config.threads)
    seeds = [config.seed * 1000 + i for i in range(config.cases)]
    draw = {
        "shape": args.phantom_shape,
        "spacing": args.phantom_spacing,
        "spacing_range": args.phantom_spacing_range,
        "max_voxels": args.phantom_max_voxels,
    }
    cases = phantom_cases(seeds, **draw)
    real = select_real(args.real_glob, args.exclude_real, args.real_limit)
    if args.real_glob and not real:
        raise UsageError(f"--real-glob {' '.join(args.real_glob)}: no file matched")
    gate = LabelGate(max_ml=args.max_label_ml)
    cases += real_cases(real, args.label_cache or config.out / ".labels", gate)
    log.info("training on %d phantoms and %d real CTs", config.cases, len(cases) - config.cases)
    negatives = negative_cases(cases, args.face_free, config.seed)
    log.info("plus %d face-free cases", len(negatives))
    cases += negatives
    (config.out).mkdir(parents=True, exist_ok=True)
    (config.out / "training_files.txt").write_text("".join(f"{p}\n" for p in real))
    weights = sampling_weights(config.cases, len(cases) - config.cases, config.phantom_share)
    result = train(config, cases, weights)
    if args.holdout:
        from ctadeface.segment.models import resolve_model
        from ctadeface.segment.segmenter import FaceSegmenter

        spec = resolve_model(str(result.folder), config.out / ".cache")
        segmenter = FaceSegmenter(spec, device="cpu")
        held = phantom_cases([10**6 + config.seed * 1000 + i for i in range(args.holdout)], **draw)
        scores = [dice(segmenter.predict(c.hu, c.spacing, affine=c.affine), c.face) for c in held]
        log.info("held-out Dice: %s", ", ".join(f"{s:.3f}" for s in scores))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
