"""Where the skull encloses the brain: the part of a head CT that a face mask must never reach.

Mask-definition.md keeps everything intracranial out of the mask (brain, dura, sinuses,
intracranial vessels). A face model can still reach there (a network trained on few heads
sometimes does), so the post-processing removes these voxels from any mask. They are found from
anatomy alone, on cells of about ``cell_mm`` (one voxel sampled per cell, so the cost does not
grow with the scan's resolution):

1. bone: cells above ``bone_hu``;
2. enclosed: cells that the bone, closed by ``close_mm``, surrounds in their slice across any of
   the three array axes (axial, coronal and sagittal slices, whatever the voxel order: the skull
   is a closed ring in them, the face is never closed in front);
3. the brain: enclosed cells of soft tissue (``soft_hu``: brain, CSF, blood), opened by one cell
   so that thin bridges break, in connected parts of at least ``min_ml``; globes and other small
   enclosed spaces fall out, air (sinuses, airway) never belongs, and what stays joined to the
   brain (the spinal canal, orbital contents behind the rims) lies outside the face mask anyway;
4. grown by ``grow_cells`` cells, so that voxels at a cell's border and next to the inner table
   are covered (it stops well short of the skin: the skull is thicker than that).

Units: HU and mm; arrays are indexed (i, j, k) as stored, ``spacing`` is mm per array axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ctadeface.body import Volume, occupied


@dataclass(frozen=True)
class SkullParams:
    """Thresholds of the intracranial test (HU, mm, mL); see the module docstring."""

    bone_hu: float = 300.0
    soft_hu: tuple[float, float] = (-50.0, 150.0)
    close_mm: float = 6.0
    cell_mm: float = 2.0
    min_ml: float = 20.0
    grow_cells: int = 1


@dataclass(frozen=True)
class Intracranial:
    """Intracranial cells of a scan.

    Attributes:
        cells: bool, True = inside the skull; ``cells[a, b, c]`` is the cell of scan voxels
            ``(offset[0] + a) * steps[0]`` to ``(offset[0] + a + 1) * steps[0] - 1`` along the
            first axis (and so on); cells beyond the array are outside the skull.
        steps: voxels per cell along each array axis.
        offset: index of the first cell along each array axis.
    """

    cells: np.ndarray
    steps: tuple[int, int, int]
    offset: tuple[int, int, int] = (0, 0, 0)

    def voxels(self, box: tuple[slice, ...]) -> np.ndarray:
        """Bool array over the voxels of ``box`` (slices with unit step): True inside."""
        index, valid = [], []
        for b, st, o, n in zip(box, self.steps, self.offset, self.cells.shape, strict=True):
            cell = np.arange(b.start, b.stop) // st - o
            valid.append((cell >= 0) & (cell < n))
            index.append(np.clip(cell, 0, n - 1))
        inside = self.cells[np.ix_(*index)]
        inside &= valid[0][:, None, None] & valid[1][None, :, None] & valid[2][None, None, :]
        return inside

    def grown(self, mm: float, spacing: Sequence[float]) -> Intracranial:
        """These cells grown by ``mm`` between cell centres (``spacing``: the scan's mm per
        array axis), and by at least one cell along each axis: every voxel within ``mm`` less
        a cell's diagonal of the skull's inside, and none beyond ``mm`` plus one."""
        cell_mm = [st * float(s) for st, s in zip(self.steps, spacing, strict=True)]
        pad = [max(1, int(np.ceil(mm / c))) for c in cell_mm]
        cells = np.pad(self.cells, [(p, p) for p in pad])
        # a cell coarser than mm counts as mm, so that the ellipsoid reaches one cell there
        scaled = [c * min(1.0, mm / c) if mm > 0 else 1.0 for c in cell_mm]
        distance = ndimage.distance_transform_edt(~cells, sampling=scaled)
        o = self.offset
        return Intracranial(
            cells=np.asarray(distance <= max(mm, 1e-6) + 1e-6),
            steps=self.steps,
            offset=(o[0] - pad[0], o[1] - pad[1], o[2] - pad[2]),
        )

    def clear(self, mask: np.ndarray, box: tuple[slice, ...]) -> int:
        """Set to False, in place, the voxels of ``mask`` (the scan's ``box``, unit-step
        slices) that lie inside the skull; return how many were True. Cheap when none is: the
        mask is first reduced to cells, and only cells holding both mask and skull are read
        voxel by voxel."""
        ranges = []
        for b, st, o, n in zip(box, self.steps, self.offset, self.cells.shape, strict=True):
            first, last = b.start // st - o, (b.stop - 1) // st - o
            lo, hi = max(0, first), min(n, last + 1)
            if lo >= hi:
                return 0
            ranges.append((lo, hi))
        skull = self.cells[tuple(slice(lo, hi) for lo, hi in ranges)]
        if not skull.any():
            return 0
        # the part of the box covered by these cells, and each cell's first voxel in it
        region, starts = [], []
        for b, st, o, (lo, hi) in zip(box, self.steps, self.offset, ranges, strict=True):
            v0 = max(b.start, (lo + o) * st)
            v1 = min(b.stop, (hi + o) * st)
            region.append(slice(v0 - b.start, v1 - b.start))
            starts.append(np.maximum(np.arange(lo + o, hi + o) * st, v0) - v0)
        sub = mask[tuple(region)]
        pooled = sub
        for axis, idx in enumerate(starts):
            pooled = np.logical_or.reduceat(pooled, idx, axis=axis)
        hit = pooled & skull
        if not hit.any():
            return 0
        # read voxel by voxel only the cells that hold both
        near = []
        for idx, r, held in zip(starts, region, occupied(hit), strict=True):
            first, last = int(held[0]), int(held[-1])
            stop = idx[last + 1] if last + 1 < len(idx) else r.stop - r.start
            near.append(slice(int(idx[first]), int(stop)))
        sub = sub[tuple(near)]
        inside = self.voxels(
            tuple(
                slice(b.start + r.start + n.start, b.start + r.start + n.stop)
                for b, r, n in zip(box, region, near, strict=True)
            )
        )
        count = int(np.count_nonzero(sub & inside))
        sub &= ~inside
        return count


def intracranial(
    hu: Volume, spacing: Sequence[float], params: SkullParams = SkullParams()
) -> Intracranial | None:
    """The intracranial cells of ``hu`` (float HU or a view that slices to HU), or None when
    nothing is enclosed by bone (no skull in the field of view)."""
    steps = tuple(max(1, int(params.cell_mm / max(s, 1e-6) + 1e-9)) for s in spacing)
    sampled = np.asarray(hu[:: steps[0], :: steps[1], :: steps[2]], dtype=np.float32)
    cell_mm = [st * s for st, s in zip(steps, spacing, strict=True)]
    bone = sampled > params.bone_hu
    if not bone.any():
        return None
    # only the box of the bone (plus the closing radius) can hold enclosed cells
    pad = [int(np.ceil(params.close_mm / c)) + 1 for c in cell_mm]
    held = occupied(bone)
    offset = tuple(max(0, int(h[0]) - p) for h, p in zip(held, pad, strict=True))
    stop = tuple(min(n, int(h[-1]) + p + 1) for h, p, n in zip(held, pad, bone.shape, strict=True))
    crop = tuple(slice(a, b) for a, b in zip(offset, stop, strict=True))
    sampled, bone = sampled[crop], bone[crop]
    enclosed = np.zeros_like(bone)
    for axis in range(3):
        enclosed |= _enclosed_in_slices(bone, axis, cell_mm, params.close_mm)
    soft = enclosed & (sampled >= params.soft_hu[0]) & (sampled <= params.soft_hu[1])
    soft = ndimage.binary_opening(soft)  # thin bridges (nerves, vessel walls) break
    labels, n = ndimage.label(soft)
    if n == 0:
        return None
    soft_ml = np.bincount(labels.ravel(), minlength=n + 1) * float(np.prod(cell_mm)) / 1000.0
    soft_ml[0] = 0.0
    if not (soft_ml >= params.min_ml).any():
        return None
    brain = (soft_ml >= params.min_ml)[labels]
    if params.grow_cells > 0:
        brain = ndimage.binary_dilation(brain, iterations=params.grow_cells)
    return Intracranial(cells=brain, steps=steps, offset=offset)  # type: ignore[arg-type]


def _enclosed_in_slices(
    bone: np.ndarray, axis: int, cell_mm: Sequence[float], close_mm: float
) -> np.ndarray:
    """Cells that the bone, closed by about ``close_mm``, surrounds within their slice across
    ``axis``. All slices at once: the closing is by an in-plane square of ``2 r + 1`` cells
    (``r`` cells ~ ``close_mm``; separable, so four running max/min filters along the in-plane
    axes), and the holes are the in-plane connected parts of the rest that do not touch the
    slice's border."""
    inplane = [a for a in range(3) if a != axis]
    r = max(1, round(close_mm / min(cell_mm[a] for a in inplane)))
    pad = [(r + 1, r + 1)] * 3
    pad[axis] = (0, 0)
    padded = np.pad(bone, pad).view(np.uint8)
    for op in (ndimage.maximum_filter1d, ndimage.minimum_filter1d):
        for a in inplane:
            padded = op(padded, 2 * r + 1, axis=a, mode="constant", cval=0)
    closed = padded.view(bool)
    cross = np.zeros((3, 3, 3), bool)  # in-plane 4-connectivity only
    cross[tuple(1 if a == axis else slice(None) for a in range(3))] = (
        ndimage.generate_binary_structure(2, 1)
    )
    labels, _ = ndimage.label(~closed, structure=cross)
    frame = np.ones(padded.shape, bool)
    frame[tuple(slice(1, -1) if a != axis else slice(None) for a in range(3))] = False
    outside = np.zeros(int(labels.max()) + 1, bool)
    outside[0] = True  # the closed bone itself
    outside[labels[frame]] = True
    holes = ~outside[labels]
    return holes[tuple(slice(p[0], n - p[1]) for p, n in zip(pad, holes.shape, strict=True))]
