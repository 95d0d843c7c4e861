"""Grids for fast inference: the body's bounding box, and linear resampling between a box of the
source grid and the model's grid, in bounded memory.

Arrays here are in any fixed axis order; ``spacing`` gives mm per array axis in the same order.
Resampling is nnU-Net's (skimage ``resize(mode="edge", anti_aliasing=False)`` = scipy ``zoom``
with ``grid_mode=True``): the outer edges of both grids coincide, output voxel ``o`` samples
input coordinate ``(o + 0.5) * n_in / n_out - 0.5``, edges extended by their nearest voxel, with
nearest (0), linear (1) or cubic B-spline (3) interpolation. It is separable and done one axis
at a time as a finite filter, on a window of the output grid only, so no full-resolution float32
copy of a scan is ever made.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage  # imported with the module, not during a scan's first segmentation

from ctadeface.body import body_cells, occupied

#: A box of a 3D grid: one slice per axis (start, stop; step 1).
Box = tuple[slice, slice, slice]


def body_box(
    volume: np.ndarray,
    spacing: Sequence[float],
    threshold: float,
    *,
    margin_mm: float,
    step_mm: float = 4.0,
    cells: tuple[np.ndarray, list[int]] | None = None,
) -> Box | None:
    """Bounding box of the largest connected body part of ``volume`` (see :func:`body_cells`,
    or pass its result as ``cells``), grown by ``margin_mm`` within the grid; None when there
    is no body."""
    found = cells if cells is not None else body_cells(volume, spacing, threshold, step_mm=step_mm)
    if found is None:
        return None
    coarse, steps = found
    box = []
    for hit, n_axis, step, sp in zip(occupied(coarse), volume.shape, steps, spacing, strict=True):
        pad = int(np.ceil(margin_mm / sp)) + step
        box.append(slice(max(0, int(hit[0]) * step - pad), min(n_axis, int(hit[-1]) * step + pad)))
    return (box[0], box[1], box[2])


def body_on_grid(
    cells: tuple[np.ndarray, list[int]],
    source_shape: Sequence[int],
    shape: Sequence[int],
    spacing: Sequence[float],
    margin_mm: float,
) -> np.ndarray:
    """The body cells sampled on a grid of ``shape`` voxels of ``spacing`` mm covering the
    source grid (nnU-Net's resampling convention), grown by ``margin_mm`` (as a box).

    The same as sampling the cells at nearest neighbour and then a box maximum filter of
    ``2 * ceil(margin_mm / spacing) + 1`` voxels (zeros outside), but computed one axis at a
    time on the few distinct cells and windows each axis has, so that only the result is
    full size (a full-resolution model grid has ~10^8 voxels).
    """
    coarse, steps = cells
    grown = coarse
    for axis, (n_src, n, step, n_cells, sp) in enumerate(
        zip(source_shape, shape, steps, coarse.shape, spacing, strict=True)
    ):
        source = (np.arange(n) + 0.5) * (n_src / n) - 0.5
        index = np.clip(np.floor(source / step + 0.5).astype(int), 0, n_cells - 1)
        grown = _grow_nearest(grown, axis, index, int(np.ceil(margin_mm / sp)))
    return grown


def _grow_nearest(cells: np.ndarray, axis: int, index: np.ndarray, radius: int) -> np.ndarray:
    """``cells`` sampled along ``axis`` at ``index`` (non-decreasing), then any() over a
    window of ``radius`` output voxels each side (clipped at the ends).

    ``index`` being monotone, a window holds exactly the distinct cells between those at its
    two ends, so the result is a difference of cumulative sums over the distinct cells.
    """
    used, where = np.unique(index, return_inverse=True)
    counts = np.cumsum(np.take(cells, used, axis=axis), axis=axis, dtype=np.int32)
    pad = [(0, 0)] * cells.ndim
    pad[axis] = (1, 0)
    counts = np.pad(counts, pad)
    out = np.arange(index.size)
    lo = where[np.clip(out - radius, 0, index.size - 1)]
    hi = where[np.clip(out + radius, 0, index.size - 1)]
    windows, which = np.unique(np.stack([lo, hi]), axis=1, return_inverse=True)
    hit = np.take(counts, windows[1] + 1, axis=axis) > np.take(counts, windows[0], axis=axis)
    return np.take(hit, which.ravel(), axis=axis)


def target_shape(
    shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]
) -> tuple[int, int, int]:
    """nnU-Net's new shape of a grid resampled from ``spacing`` to ``target`` (mm per axis),
    computed as ``nnunetv2...compute_new_shape`` does (same float expression, same rounding)."""
    out = [max(1, round(s / t * n)) for n, s, t in zip(shape, spacing, target, strict=True)]
    return (out[0], out[1], out[2])


#: Interpolation orders (nnU-Net's and scipy's): 0 nearest, 1 linear, 3 cubic B-spline.
ORDERS = (0, 1, 3)
#: Cubic B-spline interpolation is done with a finite kernel: the B-spline prefilter's impulse
#: response decays as 0.268^n and is cut at this many samples each side (error < 1e-4).
SPLINE_REACH = 6


@dataclass(frozen=True)
class AxisMap:
    """Resampling along one axis as a finite filter: output voxel ``o`` is
    ``sum_t w[o, t] * source[index[o, t]]``; ``factor`` is the whole grids' size ratio
    (output / input), which fixes the order axes are resampled in."""

    index: torch.Tensor
    w: torch.Tensor
    factor: float = 1.0

    @property
    def size(self) -> int:
        return int(self.index.shape[0])

    @property
    def span(self) -> tuple[int, int]:
        """The source voxels (start, stop) the filter reads."""
        return int(self.index.min()), int(self.index.max()) + 1

    def rows(self, start: int, stop: int) -> AxisMap:
        """The map of output voxels ``start:stop`` only."""
        return AxisMap(self.index[start:stop], self.w[start:stop], self.factor)

    def rebased(self, start: int) -> AxisMap:
        """The same map over a source that begins at source voxel ``start``."""
        return AxisMap(self.index - start, self.w, self.factor)


def _source_coordinate(n_in: int, n_out: int, index: torch.Tensor) -> torch.Tensor:
    return (index.double() + 0.5) * (n_in / n_out) - 0.5


@functools.cache
def _spline_prefilter() -> np.ndarray:
    """Impulse response of scipy's cubic B-spline prefilter, samples -R..R (R = reach + 2)."""
    reach = SPLINE_REACH + 2
    impulse = np.zeros(8 * reach + 1)
    impulse[4 * reach] = 1.0
    full = ndimage.spline_filter1d(impulse, order=3, mode="mirror")
    return full[3 * reach : 5 * reach + 1]


def _bspline3(t: np.ndarray) -> np.ndarray:
    t = np.abs(t)
    return np.where(
        t < 1, 2.0 / 3.0 - t**2 + t**3 / 2.0, np.where(t < 2, (2.0 - t) ** 3 / 6.0, 0.0)
    )


def axis_map(
    n_in: int,
    n_out: int,
    window: tuple[int, int] | None = None,
    *,
    order: int = 1,
    offset: int = 0,
    device: torch.device | None = None,
) -> AxisMap:
    """The map of output voxels ``window`` (start, stop; default all) of a grid of ``n_out``
    voxels resampled from ``n_in`` with interpolation ``order`` (0, 1 or 3, as
    ``scipy.ndimage.zoom(grid_mode=True, mode="nearest")`` and skimage's ``resize(mode="edge")``
    do); source indices are shifted by ``-offset`` (when the source array holds only the
    voxels from ``offset`` on). Equal sizes map each voxel to itself, as nnU-Net does."""
    if order not in ORDERS:
        raise ValueError(f"interpolation order {order} is not one of {ORDERS}")
    start, stop = window if window is not None else (0, n_out)
    out = torch.arange(start, stop)
    if n_in == n_out or order == 0:
        if n_in == n_out:
            index = out.clone()
        else:  # scipy's order 0 rounds halves up
            index = torch.floor(_source_coordinate(n_in, n_out, out) + 0.5).long()
        index, w = index[:, None], torch.ones((len(out), 1), dtype=torch.float64)
    else:
        x = _source_coordinate(n_in, n_out, out)
        if order == 1:
            x = x.clamp(0.0, float(n_in - 1))
        base = torch.floor(x)
        t = (x - base).numpy()
        if order == 1:
            taps = np.arange(0, 2)
            w = torch.from_numpy(np.stack([1.0 - t, t], axis=1))
        else:
            taps = np.arange(-1 - SPLINE_REACH, 3 + SPLINE_REACH)
            h = _spline_prefilter()
            centre = len(h) // 2
            bases = np.arange(-1, 3)
            b = _bspline3(t[:, None] - bases[None, :])  # (n, 4) B-spline weights
            lag = bases[:, None] - taps[None, :] + centre  # h[k - j]
            hk = np.where((lag >= 0) & (lag < len(h)), h[np.clip(lag, 0, len(h) - 1)], 0.0)
            w = torch.from_numpy(b @ hk)
        index = base.long()[:, None] + torch.from_numpy(taps)[None, :]
    index = index.clamp(0, n_in - 1) - offset
    return AxisMap(index.to(device), w.float().to(device), n_out / n_in)


def source_window(
    n_in: int, n_out: int, window: tuple[int, int], *, order: int = 1
) -> tuple[int, int]:
    """The source voxels (start, stop) that output voxels ``window`` are computed from."""
    return axis_map(n_in, n_out, window, order=order).span


def _apply_axis(
    t: torch.Tensor,
    axis: int,
    amap: AxisMap,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    *,
    chunk_elements: int = 1 << 22,
    flips: Sequence[int] = (),
) -> torch.Tensor:
    """Resample ``t`` along ``axis`` by ``amap``, as float32; ``transform`` (elementwise) is
    applied to the source values first (e.g. stored units -> normalised float32). ``flips``:
    axes along which ``t`` is stored reversed (``amap`` and the result index the reversed
    axes), so that a flipped view needs no flipped copy (torch takes no negative strides).

    The filter is applied as one dense matrix over the source range it uses (a banded matrix
    product is far faster than gathering each tap), to blocks of the other axes, so the
    transformed source exists only one block of about ``chunk_elements`` at a time; a block of
    a flipped source is flipped after it is transformed, so the arithmetic is that of the
    flipped array.
    """
    lo, hi = amap.span
    n = t.shape[axis]
    start_at = n - hi if axis in flips else lo
    source = t.narrow(axis, start_at, hi - lo).movedim(axis, 0)  # (span, *rest)
    rest = tuple(source.shape[1:])
    others = [a for a in range(t.ndim) if a != axis]
    dims = ([0] if axis in flips else []) + [1 + others.index(a) for a in flips if a != axis]
    if amap.index.shape[1] == 1 and transform is None:  # nearest or identity: a gather
        source = source.flip(dims) if dims else source
        return source.index_select(0, amap.index[:, 0] - lo).float().movedim(0, axis)
    matrix = torch.zeros((amap.size, hi - lo), dtype=torch.float32, device=t.device)
    matrix.scatter_add_(1, amap.index - lo, amap.w)
    out = torch.empty((amap.size, *rest), dtype=torch.float32, device=t.device)
    per_row = (hi - lo) * max(1, int(np.prod(rest[1:], dtype=np.int64)))
    step = max(1, chunk_elements // per_row)
    second_flipped = 1 in dims
    for start in range(0, rest[0], step):
        width = min(step, rest[0] - start)
        first = rest[0] - start - width if second_flipped else start
        block = source[:, first : first + width]
        block = transform(block) if transform is not None else block.float()
        if dims:
            block = block.flip(dims)
        span = block.shape[0]
        product = matrix @ block.reshape(span, -1)
        out[:, start : start + width] = product.view(amap.size, width, *rest[1:])
    return out.movedim(0, axis)


def resample(
    volume: torch.Tensor,
    maps: Sequence[AxisMap],
    transform: Callable[[torch.Tensor], torch.Tensor],
    *,
    flips: Sequence[int] = (),
) -> torch.Tensor:
    """``volume`` (3D, any dtype) resampled linearly by one map per axis, as float32.

    ``transform`` maps gathered source values to float32 (it must be elementwise, like HU
    conversion, clipping and z-scoring); it is applied before interpolation, as nnU-Net
    normalises before it resamples. ``flips``: axes along which ``volume`` is stored reversed
    (the maps and the result index the reversed axes; see :func:`_apply_axis`). The axis that
    shrinks most goes first, so the largest intermediate is the output's size times the other
    axes' input/output factors; the order depends on the whole grids only, so a window is
    bit-identical to that block of the whole.
    """
    order = sorted(range(3), key=lambda a: maps[a].factor)
    t = _apply_axis(volume, order[0], maps[order[0]], transform, flips=flips)
    for axis in order[1:]:
        t = _apply_axis(t, axis, maps[axis])
    return t.contiguous()


def resample_decide(
    low: torch.Tensor,
    maps: Sequence[AxisMap],
    decide: Callable[[torch.Tensor], torch.Tensor],
    *,
    chunk_voxels: int = 8_000_000,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Bring per-channel maps ``low`` (C, a, b, c) linearly to the grid of ``maps`` and decide
    per voxel.

    ``decide`` maps a (C, n, B, C3) float block to a bool block (n, B, C3), e.g. ``argmax != 0``
    over logits. Blocks of about ``chunk_voxels`` output voxels along axis 0 are made one at a
    time, each from the rows of ``low`` its filter reads (axes 2 and 1 resampled on those rows
    only), so memory stays near one block's C * n * B * C3 floats.

    Returns a bool array, one axis per map: ``out`` when given (e.g. a view into a larger
    mask), else a new C-ordered one.
    """
    first = maps[0]
    shape = (first.size, maps[1].size, maps[2].size)
    if out is None:
        out = np.empty(shape, dtype=bool)
    elif out.shape != shape or out.dtype != bool:
        raise ValueError(f"out must be a bool array of shape {shape}, not {out.shape}")
    step = max(1, chunk_voxels // max(1, maps[1].size * maps[2].size))
    for start in range(0, first.size, step):
        block = first.rows(start, start + step)
        lo, hi = block.span
        t = _apply_axis(low[:, lo:hi], 3, maps[2])
        t = _apply_axis(t, 2, maps[1])
        out[start : start + block.size] = decide(_apply_axis(t, 1, block.rebased(lo))).cpu().numpy()
    return out
