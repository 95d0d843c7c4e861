"""The air margin of the face mask, computed from the mask's tissue.

``docs/mask-definition.md`` asks for "a margin of air in front of the skin, at least 5 mm thick,
everywhere the mask touches the skin". The margin is drawn here, not learned: it is the
*outside* air within ``margin_mm`` (world mm, Euclidean) of the mask's tissue whose nearest
patient voxel is that tissue (or within ``slack_mm`` of it). This is how the phantoms' exact
mask draws it (:mod:`ctadeface.training.phantom`): there the margin is the air within
``margin_mm`` of the body, inside the face's limits; here the limits are those of the tissue the
model found, so the margin stops where the tissue stops (at the line in front of the ears, below
the chin) instead of spilling sideways along the skin (at most ``slack_mm`` past the tissue's
edge, at any distance from the skin).

- *Patient*: the non-air voxels opened by a ball of radius ``thin_mm`` + half a voxel (world
  mm), its largest connected part. Things thinner than about 2 x ``thin_mm`` that
  lie on the skin (an immobilisation shell, a plastic sheet) drop out, so the margin is measured
  from the skin beneath them, and a device within the margin is part of it (as in the phantoms'
  exact mask). The network's own mask off the patient (its learnt air margin, a shell moulded to
  the face, which carries the face's shape) is kept within ``margin_mm`` of the patient; what
  it marked there that is not air, and the air next to that, a little farther (what the opening
  may trim off the patient: a nose tip at 4 mm voxels).
- *Outside*: what is not patient and is connected to the border of the grid (6-neighbourhood).
  Air that the patient encloses (paranasal sinuses, mastoid cells) never is, even where the
  network marked it.

All arrays share one grid (i, j, k); ``spacing`` is mm per axis. Distances are computed on
cells of whole voxels (about ``cell_mm``) so that sub-millimetre CTAs stay cheap: a cell is
patient when most of its voxels are, tissue when any is.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ctadeface.body import largest_component


@dataclass(frozen=True)
class MarginParams:
    """The air margin (mm).

    Attributes:
        margin_mm: thickness of the margin in front of the mask's tissue.
        thin_mm: non-air structures thinner than about twice this (shells, sheets lying on the
            skin) are not patient: the margin is measured from the skin under them (the
            opening's ball has a radius of this plus half a voxel).
        slack_mm: the nearest patient voxel of a margin voxel may lie up to this far from the
            tissue, so that a sheet lying flush on the skin, or a skin layer the network left
            out, up to this thick, does not stop the margin (it also lets the margin run this
            far past the tissue's edge; no farther, however far from the skin).
        cell_mm: distances are measured between the centres of cells of about this size
            (whole voxels per cell; one voxel per cell where voxels are larger, which is
            exact). On coarser cells the margin's thickness is ``margin_mm`` give or take the
            diagonal of a cell less one voxel, and never less than ``min_mm``.
        min_mm: the least thickness of the margin (mask-definition.md: at least 5 mm).
    """

    margin_mm: float = 8.0
    thin_mm: float = 1.5
    slack_mm: float = 2.0
    cell_mm: float = 2.0
    min_mm: float = 5.0

    def strides(self, spacing: Sequence[float]) -> list[int]:
        """Voxels per cell along each axis."""
        return [max(1, int(self.cell_mm / float(s) + 1e-9)) for s in spacing]

    def floor_mm(self, spacing: Sequence[float]) -> float:
        """Cell-centre distance from any tissue cell within which every outside voxel is margin:
        ``min_mm`` plus the diagonal of a cell less one voxel (a voxel centre lies within half
        of it from its cell's centre, so two voxels' distance and their cells' distance differ
        by at most that diagonal); ``min_mm`` on one-voxel cells. Only pooled axes add to it."""
        spread = [(st - 1) * float(s) for st, s in zip(self.strides(spacing), spacing, strict=True)]
        return self.min_mm + float(np.sqrt(sum(e * e for e in spread)))

    def reach_mm(self, spacing: Sequence[float]) -> float:
        """Cell-centre distance from the patient's tissue cells out to which the margin
        reaches: ``margin_mm``, and at least :meth:`floor_mm` on coarse cells. A 0.7 x 3 x 3 mm
        grid on 2 x 1 x 1 cells reaches max(8, 5 + 0.7) = 8 mm (the whole cell's diagonal would
        give 9.5 mm, a margin 1.5 mm too thick)."""
        if self.strides(spacing) == [1, 1, 1]:
            return self.margin_mm
        return max(self.margin_mm, self.floor_mm(spacing))


def with_margin(
    mask: np.ndarray,
    body: np.ndarray,
    spacing: Sequence[float],
    params: MarginParams = MarginParams(),
    *,
    in_place: bool = False,
) -> np.ndarray:
    """``mask`` with the air margin in front of its tissue; a new bool array of the grid's shape,
    or ``mask`` itself overwritten when ``in_place``.

    ``mask``: the network's mask; ``body``: the non-air voxels (HU above the air threshold).
    The margin is the outside voxels within ``margin_mm`` of the mask's tissue on the patient
    whose nearest patient voxel is that tissue (or within ``slack_mm`` of it). Of the network's
    own mask off the patient (its air margin, a shell moulded to the face) what lies within
    ``margin_mm`` of the patient stays; its non-air voxels there and the air within a cell of
    them stay up to what the opening may have trimmed off the patient farther (a nose tip at
    4 mm voxels, partly below the air threshold); the rest, and any air the patient encloses
    (sinuses), is dropped. On coarse cells the air voxels of the tissue's cells that touch the
    margin join it (no unmasked sliver of air between skin and margin), and so does every
    outside cell within :meth:`MarginParams.floor_mm` of a marked cell on or beside the patient
    (a skin cell less than half body is not patient, yet its tissue bounds the least thickness).
    """
    if mask.shape != body.shape:
        raise ValueError(f"mask shape {mask.shape} != body shape {body.shape}")
    if body.flags.f_contiguous and not body.flags.c_contiguous:
        # NIfTI data are Fortran-ordered: work on the transposed (C-ordered) views, so that
        # every array made here shares one memory order with the inputs
        return with_margin(mask.T, body.T, tuple(spacing)[::-1], params, in_place=in_place).T
    if params.margin_mm <= 0:
        return mask if in_place else mask.copy()
    strides = params.strides(spacing)
    coarse = strides != [1, 1, 1]
    cell = [st * float(s) for st, s in zip(strides, spacing, strict=True)]
    marked = _marked_cells(mask, body, strides) if coarse else mask & body
    if not marked.any():
        return mask if in_place else mask.copy()
    b = _pool(body, strides, "most") if coarse else body
    patient = _patient(b, cell, params.thin_mm)
    outside = _outside(patient)
    if not patient.any() or not outside.any():
        return mask if in_place else mask.copy()
    t = marked & patient
    # a skin cell less than half body is not patient, yet its tissue bounds the margin's least
    # thickness (floor_mm); the nominal margin runs from the patient's tissue cells only, so
    # that a shell the network marked beside the skin does not push it out
    rim = None
    if coarse:  # beside the patient: its 26-neighbourhood
        cube = ndimage.generate_binary_structure(3, 3)
        rim = marked & ~patient & ndimage.binary_dilation(patient, structure=cube)
    floor_from = t | rim if rim is not None and rim.any() else None
    d_patient, nearest, (d_tissue, d_floor) = _distances(patient, [t, floor_from], cell)
    # the network's mask off the patient stays within margin_mm of it; what it marked off the
    # patient that is not air (a device, a nose tip the opening trimmed), and the air within a
    # cell of that, up to what the opening may trim more
    attach = _radius(params.thin_mm, cell) + max(cell)
    near = outside & (d_patient <= params.margin_mm + attach)
    near &= ndimage.binary_dilation(marked)
    near |= outside & (d_patient <= params.margin_mm)
    if d_tissue is None:
        grown = np.zeros_like(outside)
    else:
        grown = _grown(params, spacing, cell, outside, nearest, d_tissue, d_floor)
    del d_patient, d_tissue, d_floor, nearest
    edge = t & ndimage.binary_dilation(grown) if coarse else None  # exact tissue is all body
    out = mask if in_place else np.empty(mask.shape, bool)
    return _compose(mask, body, outside, near, grown, edge, strides, out=out)


def _grown(
    params: MarginParams,
    spacing: Sequence[float],
    cell: Sequence[float],
    outside: np.ndarray,
    nearest: np.ndarray,
    d_tissue: np.ndarray,
    d_floor: np.ndarray | None,
) -> np.ndarray:
    """The margin on cells: outside cells within reach of the patient's tissue (or within the
    floor of any tissue cell) whose nearest patient cell is tissue, or lies within the slack
    (or half a cell) of it."""
    grown = d_tissue <= params.reach_mm(spacing)
    if d_floor is not None:
        grown |= d_floor <= params.floor_mm(spacing)
    grown &= outside
    # the nearest patient voxel is tissue, or lies within the slack (or half a cell) of it
    where = np.nonzero(grown)
    at_patient = tuple(nearest[(axis, *where)] for axis in range(3))
    grown[where] = d_tissue[at_patient] <= max(params.slack_mm, 0.5 * max(cell))
    return grown


#: Cell slices along the first axis composed at a time (bounds the voxel-sized temporaries).
_CHUNK_CELLS = 8


def _marked_cells(mask: np.ndarray, body: np.ndarray, strides: Sequence[int]) -> np.ndarray:
    """Cells holding any voxel of ``mask`` and ``body`` (:func:`_pool`), a few cell slices at a
    time so that ``mask & body`` is never made whole."""
    rows = _CHUNK_CELLS * strides[0]
    return np.concatenate(
        [
            _pool(mask[start : start + rows] & body[start : start + rows], strides, "any")
            for start in range(0, mask.shape[0], rows)
        ]
    )


def _compose(
    mask: np.ndarray,
    body: np.ndarray,
    outside: np.ndarray,
    near: np.ndarray,
    grown: np.ndarray,
    edge: np.ndarray | None,
    strides: Sequence[int],
    *,
    out: np.ndarray,
) -> np.ndarray:
    """The voxels' mask from the cells', written into ``out`` (which may be ``mask``): what the
    network marked on the patient (not outside) that is body, or near the patient; all of the
    margin (``grown``); and the air voxels of the tissue's cells that touch it (``edge``, None
    on one-voxel cells). Composed a few cell slices at a time, each from the same slices of
    ``mask`` and ``body``, so no voxel-sized array is made."""
    inside = ~outside
    for c0 in range(0, outside.shape[0], _CHUNK_CELLS):
        cells = slice(c0, c0 + _CHUNK_CELLS)
        voxels = slice(c0 * strides[0], (c0 + _CHUNK_CELLS) * strides[0])
        shape = mask[voxels].shape
        part = _unpool(inside[cells], strides, shape) & body[voxels]
        part |= _unpool(near[cells], strides, shape)
        part &= mask[voxels]
        part |= _unpool(grown[cells], strides, shape)
        if edge is not None:
            part |= _unpool(edge[cells], strides, shape) & ~body[voxels]
        out[voxels] = part
    return out


def _distances(
    patient: np.ndarray, tissues: Sequence[np.ndarray | None], spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray | None]]:
    """Euclidean distances (mm) of every voxel to the nearest ``patient`` voxel, that voxel's
    indices (int32, axis first), and the distances to the nearest voxel of each of ``tissues``
    (None for one that is None or empty); the transforms run in two threads (scipy's transform
    releases the GIL)."""

    def to_patient() -> tuple[np.ndarray, np.ndarray]:
        nearest = np.empty((patient.ndim, *patient.shape), np.int32)
        d = ndimage.distance_transform_edt(
            ~patient, sampling=spacing, return_indices=True, indices=nearest
        )
        return d, nearest

    def to_tissue(tissue: np.ndarray | None) -> np.ndarray | None:
        if tissue is None or not tissue.any():
            return None
        return ndimage.distance_transform_edt(~tissue, sampling=spacing)

    with ThreadPoolExecutor(max_workers=2) as pool:
        near_patient = pool.submit(to_patient)
        near_tissues = [pool.submit(to_tissue, tissue) for tissue in tissues]
        d_patient, nearest = near_patient.result()
        return d_patient, nearest, [near.result() for near in near_tissues]


def _patient(body: np.ndarray, spacing: Sequence[float], thin_mm: float) -> np.ndarray:
    """``body`` opened by a ball of radius :func:`_radius` (world mm), its largest connected
    part, within ``body``; all of ``body`` when nothing survives the opening.

    A ball, not a box: a box's corners do not fit into rounded skin (nose, lips, chin), so a
    box opening takes about a voxel of skin off there (on a 2.7 x 1.3 x 2.7 mm phantom 844 skin
    voxels, the ball 471), and the margin measured from that shaved patient falls short of the
    8 mm in front of the skin by as much. The erosion keeps the voxels farther than the radius
    from every non-body voxel (outside the grid is body), the dilation adds those within it of
    the core: what two Euclidean distance transforms give, at a fraction of their cost.
    """
    ball = _ball(_radius(thin_mm, spacing), spacing)
    core = ndimage.binary_erosion(body, structure=ball, border_value=1)
    if not core.any():
        return body.copy()
    core = largest_component(core)
    grown = ndimage.binary_dilation(core, structure=ball)
    grown &= body
    return grown


def _ball(radius: float, spacing: Sequence[float]) -> np.ndarray:
    """The offsets (whole voxels) whose centre lies within ``radius`` mm of the centre."""
    reach = [int(radius // float(s)) for s in spacing]
    axes = [np.arange(-r, r + 1) * float(s) for r, s in zip(reach, spacing, strict=True)]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    return np.sqrt(x * x + y * y + z * z) <= radius


def _radius(thin_mm: float, spacing: Sequence[float]) -> float:
    """The opening's radius: a voxel's distance is to the nearest non-body voxel's centre, half
    a voxel beyond the edge."""
    return thin_mm + 0.5 * max(float(s) for s in spacing)


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
    views = [
        mask[tuple(slice(o, None, st) for o, st in zip(offset, strides, strict=True))]
        for offset in itertools.product(*(range(st) for st in strides))
    ]
    if how == "any":
        out = np.zeros(cells, dtype=bool)
        for view in views:
            out[tuple(slice(0, n) for n in view.shape)] |= view
        return out
    count = np.zeros(cells, dtype=np.uint32)
    for view in views:
        count[tuple(slice(0, n) for n in view.shape)] += view
    # voxels per cell: whole strides, fewer in the last cell of an axis
    per_axis = [
        np.minimum(st, n - st * np.arange(c)).astype(np.uint32)
        for n, st, c in zip(mask.shape, strides, cells, strict=True)
    ]
    size = per_axis[0][:, None, None] * per_axis[1][None, :, None] * per_axis[2][None, None, :]
    return 2 * count > size


def _unpool(cells: np.ndarray, strides: Sequence[int], shape: tuple[int, ...]) -> np.ndarray:
    """Each cell's value repeated over its voxels, cut to ``shape``."""
    out = cells
    for axis, st in enumerate(strides):
        if st > 1:
            out = np.repeat(out, st, axis=axis)
    return out[tuple(slice(0, n) for n in shape)]
