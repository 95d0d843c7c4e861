"""The fixed post-processing of a face mask (``docs/mask-definition.md``): keep the mask's
tissue, add the air margin in front of it, drop bone, what lies far from the patient and what the
skull encloses.

HU and mm throughout; ``mask`` and ``hu`` share shape and axes (i, j, k) as stored.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ctadeface.body import Volume, body_cells, bounding_box
from ctadeface.deface.margin import MarginParams, with_margin
from ctadeface.deface.skull import SkullParams, intracranial
from ctadeface.hu import BODY_HU, BONE_HU

log = logging.getLogger(__name__)

#: Slices along (i, j, k) of a box of the scan.
Box = tuple[slice, ...]


@dataclass(frozen=True)
class PostProcess:
    """The fixed mask post-processing of mask-definition.md (HU and mm).

    Attributes:
        bone_hu: voxels above this are bone or teeth and are never masked (enhanced facial
            vessels, 200-500 HU, stay in the mask).
        air_hu: voxels below this count as air (the margin is air; the tissue is not).
        margin: the air margin in front of the mask's tissue ("bulky masks are good masks":
            the filled region must not trace the face). It is computed from the tissue, not
            taken from the network (:func:`ctadeface.deface.margin.with_margin`: outside air whose
            nearest patient voxel is the mask's tissue, as in the phantoms' exact mask); the
            network's own mask off the patient stays only within the margin's reach of the
            patient, and air the patient encloses never stays. None keeps the network's mask as
            drawn.
        body_reach_mm: mask voxels farther than this from the patient (the largest connected
            part above ``air_hu``, sampled on ~4 mm cells, as the fast path finds it) are not
            face and are dropped (network false positives in the air, on a table or a wrap);
            0 keeps them.
        skull: voxels that the skull encloses (brain, CSF, intracranial vessels:
            :func:`ctadeface.deface.skull.intracranial` with these parameters) are dropped from the
            mask, whatever the model drew; None keeps them.
    """

    bone_hu: float = BONE_HU
    air_hu: float = BODY_HU
    margin: MarginParams | None = field(default_factory=MarginParams)
    body_reach_mm: float = 30.0
    skull: SkullParams | None = field(default_factory=SkullParams)


def postprocess(
    mask: np.ndarray,
    hu: Volume,
    spacing: tuple[float, float, float],
    params: PostProcess = PostProcess(),
    *,
    in_place: bool = False,
) -> np.ndarray:
    """Keep the mask's tissue, add the air margin in front of it (``params.margin``), drop bone,
    what lies beyond ``body_reach_mm`` of the patient and what the skull encloses; a new bool
    array, or ``mask`` itself overwritten when ``in_place`` (saves a copy of the volume's mask
    when the network's mask is not needed afterwards).

    ``mask`` and ``hu`` share shape and axes (i, j, k); ``spacing`` is mm per axis. Only the
    boxes of the mask's parts (:func:`part_boxes`: each part's bounding box plus the margin)
    are processed, so large scans stay cheap; with the margin on, a part whose box holds no
    cell of the patient's body lies beyond the margin's reach of it and is dropped. ``hu`` may
    be a :class:`~ctadeface.io.HUView`, converted one slab at a time.
    """
    if mask.shape != hu.shape:
        raise ValueError(f"mask shape {mask.shape} != image shape {hu.shape}")
    if not mask.any():
        return mask if in_place else mask.copy(order="K")
    reach, strides = 0.0, [1, 1, 1]
    if params.margin is not None:
        reach, strides = params.margin.reach_mm(spacing), params.margin.strides(spacing)
    pad = [int(np.ceil(reach / s)) + n for s, n in zip(spacing, strides, strict=True)]
    out = mask if in_place else np.zeros_like(mask, dtype=bool)
    boxes = part_boxes(mask, pad, strides)
    split = len(boxes) > 1
    body = body_cells(hu, spacing, params.air_hu) if params.body_reach_mm > 0 or split else None
    near = _near_cells(body, spacing, params.body_reach_mm) if params.body_reach_mm > 0 else None
    for box in boxes:  # disjoint: each reads only its own part of ``mask``
        if split and params.margin is not None and not _holds(body, box):
            # no cell of the patient within the margin's reach: neither its tissue nor margin
            out[box] = False
            continue
        out[box] = _process_box(mask[box], hu, spacing, box, params, near)
    if params.skull is not None:
        inside = intracranial(hu, spacing, params.skull)
        if inside is not None:
            dropped = sum(inside.clear(out[box], box) for box in boxes)
            if dropped:
                log.info("post-processing: %d mask voxels inside the skull dropped", dropped)
    return out


def part_boxes(mask: np.ndarray, pad: list[int], strides: list[int]) -> list[Box]:
    """The boxes the post-processing works on: the bounding box of each part of ``mask``
    (connected on cells of ``pad`` voxels), grown by ``pad`` voxels and widened to whole cells
    of ``strides`` voxels on the image's grid; parts whose boxes meet share one. The boxes are
    disjoint and hold every True voxel of ``mask``; a mask in one part gets one box, its
    bounding box grown (so a stray false positive far from the face does not stretch the face's
    box over the scan)."""
    whole = bounding_box(mask)
    cell = [max(1, p) for p in pad]
    pooled = mask[whole]
    for axis, (b, c) in enumerate(zip(whole, cell, strict=True)):
        pooled = np.logical_or.reduceat(pooled, np.arange(0, b.stop - b.start, c), axis=axis)
    labels, n = ndimage.label(pooled, structure=ndimage.generate_binary_structure(3, 3))
    parts: list[Box] = [whole]
    if n > 1:
        parts = []
        for found in ndimage.find_objects(labels):
            near = tuple(
                slice(b.start + f.start * c, min(b.stop, b.start + f.stop * c))
                for b, f, c in zip(whole, found, cell, strict=True)
            )
            tight = bounding_box(mask[near])
            parts.append(
                tuple(
                    slice(a.start + t.start, a.start + t.stop)
                    for a, t in zip(near, tight, strict=True)
                )
            )
    boxes = [_grown(part, pad, strides, mask.shape) for part in parts]
    merged = True
    while merged and len(boxes) > 1:
        merged = False
        for i, j in itertools.combinations(range(len(boxes)), 2):
            if all(
                a.start < b.stop and b.start < a.stop
                for a, b in zip(boxes[i], boxes[j], strict=True)
            ):
                union = tuple(
                    slice(min(a.start, b.start), max(a.stop, b.stop))
                    for a, b in zip(boxes[i], boxes[j], strict=True)
                )
                boxes = [box for k, box in enumerate(boxes) if k not in (i, j)] + [union]
                merged = True
                break
    return boxes


def _holds(body: tuple[np.ndarray, list[int]] | None, box: Box) -> bool:
    """Whether ``box`` holds a cell of the patient's body (``body``, as
    :func:`ctadeface.body.body_cells` gives it); True when there is no body at all."""
    if body is None:
        return True
    cells, steps = body
    return bool(
        cells[
            tuple(slice(b.start // st, -(-b.stop // st)) for b, st in zip(box, steps, strict=True))
        ].any()
    )


def _grown(part: Box, pad: list[int], strides: list[int], shape: tuple[int, ...]) -> Box:
    """``part`` grown by ``pad`` voxels, its start and stop on whole cells of ``strides`` voxels
    of the image's grid (so the margin's cells, and the mask, do not depend on how far the box
    reaches), within ``shape``."""
    return tuple(
        slice(max(0, b.start - p) // st * st, min(n, -(-(b.stop + p) // st) * st))
        for b, p, st, n in zip(part, pad, strides, shape, strict=True)
    )


def _process_box(
    mask: np.ndarray,
    hu: Volume,
    spacing: tuple[float, float, float],
    box: Box,
    params: PostProcess,
    near: tuple[np.ndarray, list[int]] | None,
) -> np.ndarray:
    """The post-processed mask on ``box`` (``mask`` is the network's there), but for the skull:
    the mask's tissue that is not bone and lies within reach of the patient (``near``: the
    cells within reach, :func:`_near_cells`; None keeps all), with the air margin."""
    air, kept, keep = _classify(hu, mask, box, params, near)
    if params.margin is None:
        return kept
    patient = np.logical_not(air, out=air)
    del air
    kept = with_margin(kept, patient, spacing, params.margin, in_place=True)
    del patient
    keep.and_into(kept)
    return kept


class _SlabBits:
    """A bool array of Fortran order held as bits (8 voxels a byte), slab by slab along its
    last axis."""

    def __init__(self) -> None:
        self.slabs: list[tuple[tuple[int, ...], np.ndarray]] = []

    def append(self, slab: np.ndarray) -> None:
        """Add the next slab (3D, any memory order)."""
        self.slabs.append((slab.shape, np.packbits(slab.ravel(order="F"))))

    def and_into(self, out: np.ndarray) -> None:
        """``out &= self``, one slab at a time (``out``: the whole array's shape)."""
        start = 0
        for shape, bits in self.slabs:
            count = int(np.prod(shape))
            slab = np.unpackbits(bits, count=count).view(bool).reshape(shape, order="F")
            out[..., start : start + shape[2]] &= slab
            start += shape[2]


#: Slices along the last axis read and converted to HU at a time (bounds the float32 copies).
_SLAB = 16


def _classify(
    hu: Volume,
    mask: np.ndarray,
    box: Box,
    params: PostProcess,
    near: tuple[np.ndarray, list[int]] | None,
) -> tuple[np.ndarray, np.ndarray, _SlabBits]:
    """On ``box``: the air (HU below ``air_hu``); the voxels of ``mask`` (the network's, on the
    box) at most ``bone_hu`` and within reach of the patient (``near``, as for
    :func:`_process_box`); and the voxels at most ``bone_hu``, as bits. Read a slab at a time,
    so that no float32 copy of the whole box is made and only the first two are box-sized."""
    shape = tuple(b.stop - b.start for b in box)
    # Fortran order, as NIfTI data and the masks made from them: slabs along the last axis are
    # contiguous, and no later operation has to mix memory orders
    air, kept = np.empty(shape, bool, order="F"), np.empty(shape, bool, order="F")
    keep = _SlabBits()
    last = box[2]
    for start in range(last.start, last.stop, _SLAB):
        slab = (box[0], box[1], slice(start, min(last.stop, start + _SLAB)))
        local = slice(start - last.start, slab[2].stop - last.start)
        values = np.asarray(hu[slab])
        np.less(values, params.air_hu, out=air[..., local])
        not_bone = values <= params.bone_hu
        keep.append(not_bone)
        np.logical_and(mask[..., local], not_bone, out=kept[..., local])
        within = _on_cells(near, slab) if near is not None else None
        if within is not None:
            kept[..., local] &= within
    return air, kept, keep


def _near_cells(
    body: tuple[np.ndarray, list[int]] | None, spacing: tuple[float, float, float], reach_mm: float
) -> tuple[np.ndarray, list[int]]:
    """The cells within ``reach_mm`` of the patient's body cells (``body``, as
    :func:`ctadeface.body.body_cells` gives them; none without a body), and their steps."""
    if body is None:
        return np.zeros((1, 1, 1), dtype=bool), [1, 1, 1]
    cells, steps = body
    sampling = [st * s for st, s in zip(steps, spacing, strict=True)]
    return ndimage.distance_transform_edt(~cells, sampling=sampling) <= reach_mm, steps


def _on_cells(near: tuple[np.ndarray, list[int]], box: Box) -> np.ndarray | None:
    """``near`` (cells and their steps) on the voxels of ``box``: a voxel takes its nearest
    cell's value; Fortran order. None when every cell the box takes is True."""
    cells, steps = near
    index = [
        np.clip(np.floor(np.arange(b.start, b.stop) / st + 0.5).astype(int), 0, n - 1)
        for b, st, n in zip(box, steps, cells.shape, strict=True)
    ]
    block = cells[tuple(slice(i[0], i[-1] + 1) for i in index)]
    if block.all():
        return None
    # each cell repeated over its voxels (the indices are non-decreasing), in reverse axis
    # order and the outermost axis last: Fortran order, whole rows copied
    out = block.T
    for axis, i in zip((2, 1, 0), index, strict=True):
        out = np.repeat(out, np.bincount(i - i[0]), axis=axis)
    return out.T
