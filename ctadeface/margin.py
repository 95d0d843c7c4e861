"""The air margin of the face mask, computed from the mask's tissue.

``shared/docs/mask-definition.md`` asks for "a margin of air in front of the skin, at least 5 mm
thick, everywhere the mask touches the skin". The margin is drawn here, not learned: it is the
*outside* air within ``margin_mm`` (world mm, Euclidean) of the mask's tissue whose nearest
patient voxel is that tissue. This is how the phantoms' exact mask draws it
(:mod:`ctadeface.phantom`): there the margin is the air within ``margin_mm`` of the body, inside
the face's limits; here the limits are those of the tissue the model found, so the margin stops
where the tissue stops (at the line in front of the ears, below the chin) instead of spilling
sideways along the skin.

- *Patient*: the non-air voxels opened by a ball of ``thin_mm`` radius, its largest connected
  part. Things thinner than about 2 x ``thin_mm`` that lie on the skin (an immobilisation shell,
  a plastic sheet) drop out, so the margin is measured from the skin beneath them, and a device
  within the margin is part of it (as in the phantoms' exact mask).
- *Outside*: what is not patient and is connected to the border of the grid (6-neighbourhood).
  Air that the patient encloses (paranasal sinuses, mastoid cells) never is.

All arrays share one grid (i, j, k); ``spacing`` is mm per axis. Distances are computed on
cells of whole voxels (about ``cell_mm``) so that sub-millimetre CTAs stay cheap: a cell is
patient when most of its voxels are, tissue when any is.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class MarginParams:
    """The air margin (mm).

    Attributes:
        margin_mm: thickness of the margin in front of the mask's tissue.
        thin_mm: non-air structures thinner than about twice this (shells, sheets lying on the
            skin) are not patient: the margin is measured from the skin under them.
        slack_mm: the nearest patient voxel may be up to this much closer than the tissue, so
            that a sheet lying flush on the skin, or a skin layer the network left out, up to
            this thick, does not stop the margin (it also lets the margin run this far past the
            tissue's edge).
        cell_mm: distances are measured on cells of about this size (whole voxels per cell; one
            voxel per cell where voxels are larger, which is exact). On coarser cells the margin
            is widened by a cell diagonal so that it is never thinner than ``margin_mm``.
    """

    margin_mm: float = 8.0
    thin_mm: float = 1.5
    slack_mm: float = 2.0
    cell_mm: float = 1.0

    def strides(self, spacing: Sequence[float]) -> list[int]:
        """Voxels per cell along each axis."""
        return [max(1, int(self.cell_mm / float(s) + 1e-9)) for s in spacing]

    def reach_mm(self, spacing: Sequence[float]) -> float:
        """How far from the tissue the margin may reach: ``margin_mm`` plus, on coarse cells,
        a cell diagonal."""
        strides = self.strides(spacing)
        if strides == [1, 1, 1]:
            return self.margin_mm
        cell = [st * float(s) for st, s in zip(strides, spacing, strict=True)]
        return self.margin_mm + float(np.sqrt(sum(c * c for c in cell)))


def with_margin(
    tissue: np.ndarray,
    body: np.ndarray,
    spacing: Sequence[float],
    params: MarginParams = MarginParams(),
) -> np.ndarray:
    """``tissue`` on the patient plus its margin: the outside voxels within ``margin_mm`` of that
    tissue whose nearest patient voxel is tissue (up to ``slack_mm``); a new bool array of the
    grid's shape.

    ``tissue``: the mask's non-air voxels; ``body``: all non-air voxels (HU above the air
    threshold). Mask voxels on things lying off the patient (a shell, a sheet: outside, not
    touching the patient) are not tissue; they stay only where they fall within the margin. On
    coarse cells the air voxels of the tissue's cells that touch the margin join it (no unmasked
    sliver of air between skin and margin).
    """
    if tissue.shape != body.shape:
        raise ValueError(f"tissue shape {tissue.shape} != body shape {body.shape}")
    if params.margin_mm <= 0 or not tissue.any():
        return tissue.copy()
    strides = params.strides(spacing)
    coarse = strides != [1, 1, 1]
    cell = [st * float(s) for st, s in zip(strides, spacing, strict=True)]
    t = _pool(tissue, strides, "any") if coarse else tissue.copy()
    b = _pool(body, strides, "most") if coarse else body
    patient = _patient(b, cell, params.thin_mm)
    outside = _outside(patient)
    loose = outside & ~ndimage.binary_dilation(patient)  # off the patient: devices, air
    t &= ~loose
    kept = tissue & ~(_unpool(loose, strides, tissue.shape) if coarse else loose)
    if not outside.any() or not t.any():
        return kept
    d_tissue = ndimage.distance_transform_edt(~t, sampling=cell)
    grown = outside & (d_tissue <= params.reach_mm(spacing))
    if patient.any():  # the nearest patient voxel is tissue (up to the slack, or half a cell)
        d_patient = ndimage.distance_transform_edt(~patient, sampling=cell)
        grown &= d_tissue <= d_patient + max(params.slack_mm, 0.5 * max(cell))
    if not coarse:
        return kept | grown
    edge = t & ndimage.binary_dilation(grown)
    fine = _unpool(grown, strides, tissue.shape) | (_unpool(edge, strides, tissue.shape) & ~body)
    return kept | fine


def _patient(body: np.ndarray, spacing: Sequence[float], thin_mm: float) -> np.ndarray:
    """``body`` opened by a ball of ``thin_mm`` (Euclidean distances), its largest connected
    part, within ``body``; all of ``body`` when nothing survives the opening."""
    # a voxel's distance is to the nearest non-body voxel's centre: half a voxel beyond the edge
    radius = thin_mm + 0.5 * max(float(s) for s in spacing)
    core = ndimage.distance_transform_edt(body, sampling=spacing) > radius
    labels, n = ndimage.label(core)
    if n == 0:
        return body.copy()
    if n > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        core = labels == int(np.argmax(sizes))
    return (ndimage.distance_transform_edt(~core, sampling=spacing) <= radius + 1e-6) & body


def _outside(patient: np.ndarray) -> np.ndarray:
    """Voxels not in ``patient`` connected (6-neighbourhood) to the border of the grid."""
    labels, n = ndimage.label(~patient)
    if n == 0:
        return np.zeros(patient.shape, dtype=bool)
    faces = [np.take(labels, i, axis=a) for a in range(3) for i in (0, -1)]
    border = np.unique(np.concatenate([f.ravel() for f in faces]))
    return np.isin(labels, border[border > 0])


def _pool(mask: np.ndarray, strides: Sequence[int], how: str) -> np.ndarray:
    """Cells of ``strides`` voxels: True where ``any`` voxel is, or where ``most`` (more than
    half of the cell's voxels on the grid) are."""
    cells = tuple(-(-n // st) for n, st in zip(mask.shape, strides, strict=True))
    count = np.zeros(cells, dtype=np.int32)
    size = np.zeros(cells, dtype=np.int32)
    for offset in itertools.product(*(range(st) for st in strides)):
        view = mask[tuple(slice(o, None, st) for o, st in zip(offset, strides, strict=True))]
        at = tuple(slice(0, n) for n in view.shape)
        count[at] += view
        size[at] += 1
    return count > 0 if how == "any" else 2 * count > size


def _unpool(cells: np.ndarray, strides: Sequence[int], shape: tuple[int, ...]) -> np.ndarray:
    """Each cell's value repeated over its voxels, cut to ``shape``."""
    out = cells
    for axis, st in enumerate(strides):
        if st > 1:
            out = np.repeat(out, st, axis=axis)
    return out[tuple(slice(0, n) for n in shape)]
