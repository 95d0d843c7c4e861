"""The fast strategy: nnU-Net's inference computed only where it reaches the body.

nnU-Net's resampling (cubic B-spline for the image, linear for the logits, nearest along a
strongly anisotropic axis, same grids, same clipping) done on torch as separable filters over a
window only; nnU-Net's sliding-window tiles, Gaussian weights and fp16 sums, but only the tiles
that reach the body's bounding box (``BODY_HU``, plus ``BOX_MARGIN_MM``); the logits brought back
to the source grid in blocks, never as a full-resolution float copy; the network in bf16 on CPUs
that compute it natively (``precision``). Masks agree with the exact strategy to Dice >= 0.99
(measured by ``bench/benchmark.py``; tests/segment/test_segmenter.py).

Arrays are nnU-Net's: the stored NIfTI array transposed, (k, j, i), spacing in mm per axis.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ctadeface.body import body_cells
from ctadeface.errors import ModelError
from ctadeface.hu import BODY_HU
from ctadeface.segment import resampling
from ctadeface.segment.exact import nnunet_predictor
from ctadeface.segment.localise import HEAD_SLAB_MM, SlabEnd, Superior, head_slab
from ctadeface.segment.models import ModelSpec
from ctadeface.segment.network import (
    ModelConfig,
    Network,
    UnsupportedModel,
    interpolation_orders,
    load_network,
    plan_tiles,
    read_config,
)

log = logging.getLogger(__name__)

#: The body box around voxels above BODY_HU gets this margin (mm).
BOX_MARGIN_MM = 30.0

#: Normalisation schemes that act voxel by voxel, so the fast strategy may apply them to
#: gathered voxels before resampling (as nnU-Net normalises before it resamples).
POINTWISE_NORMALIZATIONS = frozenset({"CTNormalization", "NoNormalization"})

#: nnU-Net resampling functions the fast strategy reproduces (with their order/order_z/
#: separate-z keyword arguments).
SUPPORTED_RESAMPLING = frozenset({"resample_data_or_seg_to_shape"})

#: Torch dtypes that index_select handles on CPU and CUDA; other stored dtypes are cast first.
_TORCH_DTYPES = (np.int16, np.uint8, np.int8, np.int32, np.float32, np.float64)

#: How the fast strategy describes itself in the provenance.
DESCRIPTION = (
    "nnU-Net's resampling, tiles and weights, only the tiles reaching the body box "
    f"(HU > {BODY_HU:.0f}, margin {BOX_MARGIN_MM:.0f} mm), cut {BOX_MARGIN_MM:.0f} mm below "
    f"the head slab (from the top of the body down to the shoulders, at most "
    f"{HEAD_SLAB_MM:.0f} mm; none where the body begins in the trunk)"
)

#: A logit that no interpolation with real logits (|x| < 100) can overturn, and finite, so that
#: the zero weights of the resampling filters keep it out of voxels it does not reach.
_FAR = 1.0e4


def unsupported(config: ModelConfig) -> str:
    """Why the fast strategy cannot reproduce this model's preprocessing ('' if it can)."""
    if config.normalization[0] not in POINTWISE_NORMALIZATIONS:
        return f"its intensity normalisation {config.normalization[0]} is not voxel-wise"
    for key, (name, kwargs) in (
        ("resampling_fn_data", config.resampling_data),
        ("resampling_fn_probabilities", config.resampling_probabilities),
    ):
        if name not in SUPPORTED_RESAMPLING:
            return f"its {key} is {name}"
        for order_key in ("order", "order_z"):
            if int(kwargs.get(order_key, 0)) not in resampling.ORDERS:
                return f"its {key} {order_key} {kwargs.get(order_key)} is not 0, 1 or 3"
    return ""


class FastStrategy:
    """Segments with the model's network (:mod:`ctadeface.segment.network`, weights loaded
    with ``weights_only=True``; nnU-Net itself builds it only for plans that module cannot
    read) over the tiles that reach the body."""

    description = DESCRIPTION

    def __init__(
        self,
        model: ModelSpec,
        device: torch.device,
        *,
        tta: bool,
        precision: str,
        tile_step_size: float,
    ) -> None:
        self.device = device
        self.precision = precision
        self.tile_step_size = tile_step_size
        self.network = _load(model, device, tta=tta, precision=precision, step=tile_step_size)
        self._warm_up()

    @property
    def spacing(self) -> tuple[float, ...]:
        """The model grid, mm per axis (k, j, i)."""
        return tuple(float(s) for s in self.network.config.spacing)

    def _warm_up(self) -> None:
        """Segment a small synthetic head once, so that one-off costs (kernel set-up, lazy
        imports, first allocations) count as model load, not as the first scan's time."""
        config = self.network.config
        shape = [max(int(p), 8) for p in config.patch_size]
        idx = np.indices(shape, dtype=np.float32)
        radius = sum(((idx[a] - n / 2) / (0.35 * n)) ** 2 for a, n in enumerate(shape))
        head = np.where(radius < 1.0, 40, -1000).astype(np.int16)
        with torch.inference_mode():
            spacing = tuple(0.8 * float(t) for t in config.spacing)
            self.segment(head, spacing, 1.0, 0.0, out=np.zeros(head.shape, dtype=bool))

    def segment(
        self,
        kji: np.ndarray,
        spacing: tuple[float, ...],
        slope: float,
        inter: float,
        *,
        up: Superior | None = None,
        out: np.ndarray,
    ) -> None:
        """The bool mask of ``kji`` (stored units; HU = stored * slope + inter), spacing in mm
        per axis (k, j, i): nnU-Net's sliding window restricted to the tiles that reach the
        body's box (with ``up``, the patient's superior direction: the box ends, along it,
        ``BOX_MARGIN_MM`` below the head slab, :mod:`ctadeface.segment.localise`).

        The model grid, the tile positions, the Gaussian weighting and its half-precision
        accumulation are nnU-Net's for the whole field of view. Only tiles holding body (grown
        by ``BOX_MARGIN_MM``) within the box run; every tile covering such a voxel does, so
        there the logits are those of the whole-image run (given the same resampled input), and
        within the box the mask is the whole-image run's. Elsewhere it is background. The mask
        is written into ``out``, an all-False bool array of ``kji``'s shape (any strides).
        """
        config = self.network.config
        patch = [int(p) for p in config.patch_size]
        full = resampling.target_shape(kji.shape, spacing, [float(t) for t in config.spacing])
        threshold = (BODY_HU - inter) / slope if slope > 0 else -np.inf
        cells = body_cells(kji, spacing, threshold)
        if cells is None:
            return
        box = resampling.body_box(kji, spacing, threshold, margin_mm=BOX_MARGIN_MM, cells=cells)
        if up is not None:
            kept, slab = head_slab(cells[0], cells[1], spacing, up)
            if slab.end == SlabEnd.TRUNK:
                log.info("the body begins in the trunk (no head at its top): nothing to segment")
                return
            if kept is not cells[0]:
                box = _slab_box(box, kji, spacing, threshold, (kept, cells[1]), up.axis)
        if box is None:
            return
        target = [float(t) for t in config.spacing]
        region = resampling.body_on_grid(cells, kji.shape, full, target, BOX_MARGIN_MM)
        data_orders, data_axis = interpolation_orders(config.resampling_data[1], spacing, target)
        prob_orders, _ = interpolation_orders(config.resampling_probabilities[1], target, spacing)
        needed = [
            resampling.source_window(n_low, n, (b.start, b.stop), order=order)
            for n_low, n, b, order in zip(full, kji.shape, box, prob_orders, strict=True)
        ]
        # the body region within the model-grid window the box needs: tiles that reach the
        # body only beyond it (below the head slab) do not run
        region = _within(region, needed)
        plan = plan_tiles(full, patch, needed, self.tile_step_size, region)
        log.debug(
            "network on %d of the %d tiles of the whole field of view (model grid %s)",
            len(plan.tiles), plan.whole, "x".join(map(str, full)),
        )  # fmt: skip
        volume = kji if kji.dtype.type in _TORCH_DTYPES and kji.dtype.isnative else None
        if volume is None:  # torch cannot index this dtype: a float32 copy
            volume = kji.astype(np.float32)
        # a view turned to the model's orientation may run backwards along some axes: torch
        # gets the forward view, the resampling reads it reversed
        flips = tuple(a for a in range(3) if volume.strides[a] < 0)
        source = torch.from_numpy(np.flip(volume, flips) if flips else volume).to(self.device)
        maps = [
            resampling.axis_map(n, n_low, (w0, w1), order=order, device=self.device)
            for n, n_low, (w0, w1), order in zip(
                kji.shape, full, plan.real, data_orders, strict=True
            )
        ]
        transform = self._transform(slope, inter)
        low = resampling.resample(source, maps, transform, flips=flips)
        if full != kji.shape:  # skimage's resize clips to the range of what it resized
            _clip_to_source_range(low, source, transform, data_axis, maps, flips)
        del source
        low = torch.nn.functional.pad(low, plan.padding)[None, None]
        window_logits = self.network.logits(low, plan.tiles)
        del low
        logits = _crop_or_pad(window_logits, plan.window, needed)
        del window_logits
        outside = torch.from_numpy(~region[tuple(slice(a, b) for a, b in needed)])
        outside = outside.to(self.device)
        decide: Callable[[torch.Tensor], torch.Tensor]
        if config.has_regions:
            decide = _any_region
            logits[:, outside] = -_FAR
        elif logits.shape[0] == 2:  # linear interpolation commutes with the difference
            logits, decide = (logits[1] - logits[0])[None], _positive
            logits[:, outside] = -_FAR
        else:
            decide = _not_background
            logits[0, outside] = _FAR
        upsample = [
            resampling.axis_map(
                n_low, n, (b.start, b.stop), order=order, offset=a, device=self.device
            )
            for n_low, n, b, (a, _), order in zip(
                full, kji.shape, box, needed, prob_orders, strict=True
            )
        ]
        resampling.resample_decide(logits, upsample, decide, out=out[box])

    def _transform(self, slope: float, inter: float) -> Callable[[torch.Tensor], torch.Tensor]:
        """Stored values -> float32 HU -> the model's normalisation (elementwise)."""
        scheme, props = self.network.config.normalization

        def to_input(t: torch.Tensor) -> torch.Tensor:
            hu = t.float()
            if slope != 1.0 or inter != 0.0:
                hu = hu * slope + inter
            if scheme == "CTNormalization":
                hu = hu.clamp(props["percentile_00_5"], props["percentile_99_5"])  # a new tensor
                hu = (hu - props["mean"]) / max(props["std"], 1e-8)
            return hu

        return to_input


def _load(
    model: ModelSpec, device: torch.device, *, tta: bool, precision: str, step: float
) -> Network:
    """The model's network with its folds' weights. Raises ModelError."""
    try:
        try:
            config, module, weights = load_network(
                model.folder, model.configuration, model.folds, model.checkpoint, model.trainer
            )
        except UnsupportedModel as why:
            log.info("model %s: %s; nnU-Net builds its network", model.name, why)
            predictor = nnunet_predictor(model, device, tta=tta, tile_step_size=step)
            config = _config_of(predictor, model.configuration)
            module, weights = predictor.network, list(predictor.list_of_parameters)
    except (OSError, KeyError, RuntimeError, ValueError, TypeError) as e:
        raise ModelError(f"model {model.folder} cannot be loaded: {e}") from e
    except pickle.UnpicklingError as e:
        raise ModelError(f"model {model.folder}: refusing its checkpoint ({e})") from e
    return Network(module, weights, config, device, tta=tta, precision=precision)


def _config_of(predictor: Any, configuration_name: str) -> ModelConfig:
    """The inference settings of a model nnU-Net loaded itself (``nnUNetPredictor`` keeps the
    plans but not the name of the configuration it loaded)."""
    return read_config(
        predictor.plans_manager.plans,
        predictor.dataset_json,
        configuration_name,
        predictor.allowed_mirroring_axes or (),
    )


def _slab_box(
    box: resampling.Box | None,
    kji: np.ndarray,
    spacing: tuple[float, ...],
    threshold: float,
    slab_cells: tuple[np.ndarray, list[int]],
    axis: int,
) -> resampling.Box | None:
    """The body ``box`` cut along the superior ``axis`` to the head slab's body cells
    (``slab_cells``) grown by ``BOX_MARGIN_MM``; across it the box stays the whole body's, so
    that within the cut box every voxel sees the whole field of view's body region."""
    cut = resampling.body_box(kji, spacing, threshold, margin_mm=BOX_MARGIN_MM, cells=slab_cells)
    if box is None or cut is None:
        return None
    along = [cut[a] if a == axis else box[a] for a in range(3)]
    return (along[0], along[1], along[2])


def _within(region: np.ndarray, window: Sequence[tuple[int, int]]) -> np.ndarray:
    """``region`` (bool) with every voxel outside ``window`` (start, stop per axis) False."""
    inside = np.zeros_like(region)
    block = tuple(slice(a, b) for a, b in window)
    inside[block] = region[block]
    return inside


def _clip_to_source_range(
    low: torch.Tensor,
    source: torch.Tensor,
    transform: Callable[[torch.Tensor], torch.Tensor],
    axis: int | None,
    maps: Sequence[resampling.AxisMap],
    flips: Sequence[int] = (),
) -> None:
    """Clip resampled values in place to the range of the normalised source, over the whole
    image, or per slice along a separately resampled ``axis`` (as nnU-Net's 2D resizes);
    ``source`` runs backwards along ``flips`` (as for :func:`resampling.resample`)."""
    # reduced in memory order: torch copies a permuted tensor before reducing it
    order = sorted(range(3), key=lambda a: -source.stride()[a])
    dense = source.permute(order)
    if axis is None:
        bounds = transform(torch.stack(torch.aminmax(dense)))
        low.clamp_(float(bounds[0]), float(bounds[1]))
        return
    others = tuple(i for i, a in enumerate(order) if a != axis)
    lows, highs = dense.amin(dim=others), dense.amax(dim=others)
    if axis in flips:
        lows, highs = lows.flip(0), highs.flip(0)
    lows = transform(lows)[maps[axis].index[:, 0]]
    highs = transform(highs)[maps[axis].index[:, 0]]
    shape = [1, 1, 1]
    shape[axis] = -1
    torch.maximum(low, lows.view(shape), out=low)
    torch.minimum(low, highs.view(shape), out=low)


def _crop_or_pad(
    logits: torch.Tensor, window: Sequence[tuple[int, int]], needed: Sequence[tuple[int, int]]
) -> torch.Tensor:
    """The ``needed`` block (start, stop per axis) of ``logits`` (C, ...) that cover
    ``window``, float32, zeros where the window does not reach."""
    shape = [b - a for a, b in needed]
    if all(w[0] <= a and b <= w[1] for (a, b), w in zip(needed, window, strict=True)):
        inner = tuple(slice(a - w[0], b - w[0]) for (a, b), w in zip(needed, window, strict=True))
        return logits[(slice(None), *inner)].float()
    out = torch.zeros((logits.shape[0], *shape), dtype=torch.float32, device=logits.device)
    lo = [max(a, w[0]) for (a, _), w in zip(needed, window, strict=True)]
    hi = [min(b, w[1]) for (_, b), w in zip(needed, window, strict=True)]
    if all(h > lw for lw, h in zip(lo, hi, strict=True)):
        dst = tuple(slice(lw - a, h - a) for lw, h, (a, _) in zip(lo, hi, needed, strict=True))
        src = tuple(slice(lw - w[0], h - w[0]) for lw, h, w in zip(lo, hi, window, strict=True))
        out[(slice(None), *dst)] = logits[(slice(None), *src)].float()
    return out


def _positive(block: torch.Tensor) -> torch.Tensor:
    return block[0] > 0


def _not_background(block: torch.Tensor) -> torch.Tensor:
    return block.argmax(0) != 0


def _any_region(block: torch.Tensor) -> torch.Tensor:
    return (block > 0).any(0)
