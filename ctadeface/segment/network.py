"""The network of an nnU-Net v2 model folder and nnU-Net's sliding-window inference, without
importing nnU-Net.

``load_network(folder, ...)`` reads ``plans.json``, ``dataset.json`` and the fold checkpoints,
builds the architecture the plans name (``dynamic_network_architectures``, as nnU-Net's
``get_network_from_plans`` does) and loads the weights with ``torch.load(weights_only=True)``:
no pickled code runs. ``Network.logits(x, tiles)`` is nnU-Net's
``_internal_predict_sliding_window_return_logits`` for a chosen subset of tiles (same Gaussian
weights, same fp16 sums, same tile order, mirroring TTA, folds averaged).

It also holds nnU-Net's other inference conventions the fast path reproduces: which axis is
resampled separately (``separate_axis``) and which sliding-window tiles reach a region
(``plan_tiles``). Axes are nnU-Net's: the stored NIfTI array transposed, (k, j, i), spacing in mm
per axis.
Models whose plans this module cannot read (older plan formats, custom trainers) are loaded by
nnU-Net itself (:mod:`ctadeface.segment.fast`); the inference here works on either network.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: Trainers whose network is the plans' architecture unchanged (nnU-Net's default trainer, its
#: epoch-count variants and the one without mirroring).
PLAIN_TRAINERS = re.compile(r"nnUNetTrainer(_\d+epochs|NoMirroring|_\d+epochs_NoMirroring)?")

#: Python objects besides tensors that nnU-Net checkpoints hold (numpy scalars in the training
#: log); allowed to ``torch.load(weights_only=True)`` and nothing else.
NUMPY_GLOBALS = frozenset(
    {
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "numpy.dtype",
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
        "numpy.ndarray",
    }
)


class UnsupportedModel(Exception):
    """The model folder needs nnU-Net itself to be built (the message says why)."""


@dataclass(frozen=True)
class ModelConfig:
    """What inference needs from a model's plans, dataset.json and checkpoint.

    Attributes:
        patch_size: tile size in voxels (k, j, i).
        spacing: the model grid, mm per axis (k, j, i).
        normalization: the scheme name (e.g. ``CTNormalization``) and its intensity properties.
        resampling_data, resampling_probabilities: nnU-Net resampling function names and their
            keyword arguments (order, order_z, force_separate_z).
        heads: output channels; ``has_regions``: sigmoid regions instead of softmax labels.
        mirror_axes: axes mirrored for test-time augmentation.
    """

    patch_size: tuple[int, ...]
    spacing: tuple[float, ...]
    normalization: tuple[str, dict[str, float]]
    resampling_data: tuple[str, dict[str, Any]]
    resampling_probabilities: tuple[str, dict[str, Any]]
    heads: int
    has_regions: bool
    mirror_axes: tuple[int, ...] = ()
    channels: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


def configuration(plans: dict[str, Any], name: str) -> dict[str, Any]:
    """The configuration ``name`` of ``plans`` with what it inherits merged in."""
    configs = plans["configurations"]
    if name not in configs:
        raise KeyError(f"configuration {name} is not in the plans")
    own = dict(configs[name])
    parent = own.pop("inherits_from", None)
    return {**configuration(plans, parent), **own} if parent else own


def read_config(
    plans: dict[str, Any], dataset: dict[str, Any], name: str, mirror_axes: Sequence[int]
) -> ModelConfig:
    """Collect the inference settings of configuration ``name``."""
    config = configuration(plans, name)
    labels = {k: v for k, v in dataset["labels"].items() if k != "ignore"}
    has_regions = any(isinstance(v, list | tuple) and len(v) > 1 for v in labels.values())
    if has_regions:
        heads = len([k for k in labels if k != "background"])
    else:
        heads = len({int(v if not isinstance(v, list | tuple) else v[0]) for v in labels.values()})
    channels = dataset.get("channel_names", dataset.get("modality", {"0": "CT"}))
    schemes = list(config["normalization_schemes"])
    properties = plans.get("foreground_intensity_properties_per_channel", {}).get("0", {})
    return ModelConfig(
        patch_size=tuple(int(p) for p in config["patch_size"]),
        spacing=tuple(float(s) for s in config["spacing"]),
        normalization=(schemes[0] if schemes else "", dict(properties)),
        resampling_data=(
            str(config.get("resampling_fn_data")),
            dict(config.get("resampling_fn_data_kwargs", {})),
        ),
        resampling_probabilities=(
            str(config.get("resampling_fn_probabilities")),
            dict(config.get("resampling_fn_probabilities_kwargs", {})),
        ),
        heads=heads,
        has_regions=has_regions,
        mirror_axes=tuple(int(a) for a in mirror_axes),
        channels=len(channels),
    )


def numpy_globals(path: Path) -> tuple[list[str], list[str]]:
    """The Python globals a checkpoint's pickle references beyond tensors, split into the numpy
    scalars and dtypes nnU-Net's training log holds (allowed) and everything else (sorted).
    Reads the pickle without unpickling it."""
    found = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    allowed = [g for g in found if g in NUMPY_GLOBALS or g.startswith("numpy.dtypes.")]
    return allowed, sorted(set(found) - set(allowed))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)``, allowing the numpy scalars nnU-Net's training
    log holds. Raises ``pickle.UnpicklingError``/``RuntimeError`` on anything else."""
    allowed, _ = numpy_globals(path)
    with torch.serialization.safe_globals([_locate(g) for g in allowed]):
        return torch.load(str(path), map_location="cpu", weights_only=True)


def _locate(dotted: str) -> Any:
    module, _, attr = dotted.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def build_architecture(config: dict[str, Any], channels: int, heads: int) -> torch.nn.Module:
    """The network the plans' ``architecture`` entry names, as nnU-Net builds it for inference
    (no deep supervision). Raises UnsupportedModel for plans without that entry."""
    arch = config.get("architecture")
    if not isinstance(arch, dict) or "network_class_name" not in arch:
        raise UnsupportedModel("its plans predate nnU-Net's 'architecture' entry")
    kwargs = dict(arch.get("arch_kwargs", {}))
    for key in arch.get("_kw_requires_import", ()):
        if kwargs.get(key) is not None:
            kwargs[key] = _locate(str(kwargs[key]))
    klass = _locate(str(arch["network_class_name"]))
    if "deep_supervision" not in kwargs:
        kwargs["deep_supervision"] = False
    network = klass(input_channels=channels, num_classes=heads, **kwargs)
    return network


def load_network(
    folder: Path, configuration_name: str, folds: Sequence[str], checkpoint: str, trainer: str
) -> tuple[ModelConfig, torch.nn.Module, list[dict[str, torch.Tensor]]]:
    """Config, network and per-fold weights of an nnU-Net v2 trained-model folder.

    Raises UnsupportedModel when nnU-Net itself must build it, OSError/KeyError/ValueError/
    RuntimeError for broken folders.
    """
    if not PLAIN_TRAINERS.fullmatch(trainer):
        raise UnsupportedModel(f"its trainer {trainer} may change the architecture")
    plans = json.loads((folder / "plans.json").read_text(encoding="utf-8"))
    dataset = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    weights, mirror_axes = [], None
    for fold in folds:
        ckpt = load_checkpoint(folder / f"fold_{fold}" / checkpoint)
        weights.append(ckpt["network_weights"])
        if mirror_axes is None:
            mirror_axes = ckpt.get("inference_allowed_mirroring_axes") or ()
    config = read_config(plans, dataset, configuration_name, mirror_axes or ())
    network = build_architecture(
        configuration(plans, configuration_name), config.channels, config.heads
    )
    network.load_state_dict(weights[0])
    return config, network.eval(), weights


def gaussian(patch: Sequence[int], device: torch.device) -> torch.Tensor:
    """nnU-Net's tile weights: a Gaussian (sigma = patch / 8) scaled to a maximum of 10, fp16,
    zeros replaced by the smallest positive value."""
    from scipy.ndimage import gaussian_filter

    impulse = np.zeros(tuple(patch))
    impulse[tuple(p // 2 for p in patch)] = 1
    weights = gaussian_filter(impulse, [p / 8 for p in patch], 0, mode="constant", cval=0)
    weights /= np.max(weights) / 10
    out = torch.from_numpy(weights).to(device=device, dtype=torch.float16)
    out[out == 0] = torch.min(out[out != 0])
    return out


def tile_starts(size: Sequence[int], patch: Sequence[int], step: float) -> list[list[int]]:
    """nnU-Net's sliding-window tile starts per axis over a grid of ``size`` (>= patch)."""
    starts = []
    for n, p in zip(size, patch, strict=True):
        count = int(np.ceil((n - p) / (p * step))) + 1
        stride = (n - p) / (count - 1) if count > 1 else 99999999999
        starts.append([int(np.round(stride * i)) for i in range(count)])
    return starts


def _in_tile(tile: tuple[slice, ...]) -> tuple[int | slice, ...]:
    """Index of one tile of the single image of a (1, C, ...) input."""
    return (0, slice(None), *tile)


class Network:
    """One network with its folds' weights, run tile by tile as nnU-Net does.

    ``precision``: ``fp32``, ``bf16`` or ``fp16`` (autocast). ``tta``: mirror over the model's
    allowed axes. ``batch``: tiles per forward pass (None: :func:`tiles_per_pass`); the logits
    are still summed tile by tile in nnU-Net's order.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        weights: list[dict[str, torch.Tensor]],
        config: ModelConfig,
        device: torch.device,
        *,
        tta: bool = False,
        precision: str = "fp32",
        batch: int | None = None,
    ) -> None:
        self.config = config
        self.device = device
        self.tta = tta
        self.precision = precision
        self.batch = batch if batch is not None else tiles_per_pass(module, config, device)
        self._module = module.to(device).eval()
        self._weights = weights
        self._loaded = 0  # index of the fold whose weights the module holds
        self._tile_weights = gaussian(config.patch_size, device)  # the same for every scan

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision in ("fp16", "bf16"):
            dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
            return torch.autocast(self.device.type, dtype=dtype)
        return contextlib.nullcontext()

    def _predict_tile(self, x: torch.Tensor) -> torch.Tensor:
        prediction = self._module(x)
        if self.tta and self.config.mirror_axes:
            axes = [a + 2 for a in self.config.mirror_axes]
            combos = [c for n in range(len(axes)) for c in itertools.combinations(axes, n + 1)]
            for flip in combos:
                prediction += torch.flip(self._module(torch.flip(x, flip)), flip)
            prediction /= len(combos) + 1
        return prediction

    @torch.inference_mode()
    def logits(self, x: torch.Tensor, tiles: Sequence[tuple[slice, ...]]) -> torch.Tensor:
        """Gaussian-weighted logits (C, ...) of ``x`` (1, C_in, ...) over ``tiles``, averaged over
        the folds; voxels no tile covers are 0/0 = NaN."""
        weight_map = self._tile_weights
        total = None
        for fold, params in enumerate(self._weights):
            if fold != self._loaded:
                self._module.load_state_dict(params)
                self._loaded = fold
            logits = torch.zeros(
                (self.config.heads, *x.shape[2:]), dtype=torch.half, device=self.device
            )
            weight = torch.zeros(x.shape[2:], dtype=torch.half, device=self.device)
            with self._autocast():
                for first in range(0, len(tiles), self.batch):
                    group = tiles[first : first + self.batch]
                    parts = [x[_in_tile(tile)] for tile in group]
                    preds = self._predict_tile(torch.stack(parts))
                    for tile, pred in zip(group, preds, strict=True):
                        if pred.dtype == torch.bfloat16:
                            pred = pred.float()
                        pred *= weight_map
                        logits[(slice(None), *tile)] += pred
                        weight[tile] += weight_map
            torch.div(logits, weight, out=logits)
            total = logits.float() if total is None else total + logits.float()
        assert total is not None
        return total / len(self._weights) if len(self._weights) > 1 else total


#: GPU memory one tile's forward pass may take, per voxel of the patch and feature of the first
#: stage (fp16 activations kept by the decoder's skips, with room to spare); bytes.
_TILE_BYTES_PER_VOXEL_FEATURE = 24
#: More tiles per pass than this gain nothing measurable (bench/results/gpu.md: 13.6, 10.6,
#: 8.9, 8.3 ms per 128^3 tile of the CTA-DEFACE architecture for 1, 2, 4, 8 tiles on an H200).
MAX_TILES_PER_PASS = 4


def tiles_per_pass(module: torch.nn.Module, config: ModelConfig, device: torch.device) -> int:
    """Tiles per forward pass: 1 on the CPU (no gain there, more memory); on a GPU as many as
    a quarter of its free memory holds, at most :data:`MAX_TILES_PER_PASS`."""
    if device.type != "cuda":
        return 1
    kinds = (torch.nn.Conv2d, torch.nn.Conv3d)
    convs = (m for m in module.modules() if isinstance(m, kinds))
    features = next((int(c.out_channels) for c in convs), 32)
    free, _ = torch.cuda.mem_get_info(device)
    tile = math.prod(config.patch_size) * features * _TILE_BYTES_PER_VOXEL_FEATURE
    return int(max(1, min(MAX_TILES_PER_PASS, free // 4 // tile)))


#: nnU-Net's ANISO_THRESHOLD: an axis this many times coarser than the others is resampled
#: separately (with ``order_z``).
ANISOTROPY_THRESHOLD = 3.0


def separate_axis(force: bool | None, current: Sequence[float], new: Sequence[float]) -> int | None:
    """The axis nnU-Net resamples separately, as its ``determine_do_sep_z_and_axis``."""

    def coarsest(spacing: Sequence[float]) -> np.ndarray:
        values = np.asarray(spacing, dtype=float)
        return np.where(values.max() / values == 1)[0]

    def anisotropic(spacing: Sequence[float]) -> bool:
        return bool(max(spacing) / min(spacing) > ANISOTROPY_THRESHOLD)

    if force is not None:
        axes = coarsest(current) if force else None
    elif anisotropic(current):
        axes = coarsest(current)
    elif anisotropic(new):
        axes = coarsest(new)
    else:
        axes = None
    return int(axes[0]) if axes is not None and len(axes) == 1 else None


def interpolation_orders(
    kwargs: dict[str, Any], current: Sequence[float], new: Sequence[float]
) -> tuple[list[int], int | None]:
    """Interpolation order per axis for nnU-Net's ``resample_data_or_seg_to_shape`` with
    ``kwargs`` from ``current`` to ``new`` spacing, and the separately resampled axis if any."""
    order, order_z = int(kwargs.get("order", 3)), int(kwargs.get("order_z", 0))
    axis = separate_axis(kwargs.get("force_separate_z"), current, new)
    return [order_z if a == axis else order for a in range(3)], axis


@dataclass(frozen=True)
class TilePlan:
    """Which of nnU-Net's sliding-window tiles to run, in model-grid voxels (k, j, i).

    Attributes:
        window: per axis (start, stop) of the region the tiles cover, in unpadded coordinates
            (it may reach below 0 or past the grid where nnU-Net pads a grid smaller than
            the patch).
        real: per axis the part of ``window`` inside the grid.
        padding: ``torch.nn.functional.pad`` amounts that turn the ``real`` block into the
            ``window`` block (zeros, as nnU-Net pads).
        tiles: slices into the window block, in nnU-Net's order.
        whole: how many tiles nnU-Net runs over the whole grid.
    """

    window: tuple[tuple[int, int], ...]
    real: tuple[tuple[int, int], ...]
    padding: tuple[int, ...]
    tiles: list[tuple[slice, ...]]
    whole: int


def plan_tiles(
    shape: tuple[int, ...],
    patch: list[int],
    needed: list[tuple[int, int]],
    step: float,
    region: np.ndarray | None = None,
) -> TilePlan:
    """The tiles of nnU-Net's sliding window over ``shape`` (padded to the patch as nnU-Net
    pads) that overlap the ``needed`` region (start, stop per axis) and, if given, hold any
    voxel of ``region`` (a bool array of ``shape``)."""
    below = [max(0, p - n) // 2 for n, p in zip(shape, patch, strict=True)]
    padded = [max(n, p) for n, p in zip(shape, patch, strict=True)]
    steps = tile_starts(padded, patch, step)
    candidates = [
        [s for s in axis_steps if s < b + off and s + p > a + off]
        for axis_steps, p, (a, b), off in zip(steps, patch, needed, below, strict=True)
    ]
    kept = []
    for combo in itertools.product(*candidates):
        unpadded = tuple(
            slice(max(0, s - off), max(0, s - off + p))
            for s, off, p in zip(combo, below, patch, strict=True)
        )
        if region is None or region[unpadded].any():
            kept.append(combo)
    if not kept:  # nothing of the region reaches the needed box: keep nnU-Net's cover of it
        kept = list(itertools.product(*candidates))
    first = [min(c[a] for c in kept) for a in range(len(shape))]
    last = [max(c[a] for c in kept) for a in range(len(shape))]
    window = tuple(
        (f - off, e + p - off) for f, e, p, off in zip(first, last, patch, below, strict=True)
    )
    real = tuple((max(0, a), min(n, b)) for (a, b), n in zip(window, shape, strict=True))
    padding: list[int] = []
    for (a, b), (ra, rb) in reversed(list(zip(window, real, strict=True))):
        padding += [ra - a, b - rb]
    tiles = [
        tuple(slice(s - f, s - f + p) for s, f, p in zip(combo, first, patch, strict=True))
        for combo in kept
    ]
    return TilePlan(window, real, tuple(padding), tiles, math.prod(len(s) for s in steps))
