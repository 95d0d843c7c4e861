"""Strict mode (``--mask strict``): the face mask plus the front of the facial skeleton.

``docs/mask-definition.md``: for data that do not need the facial bones, also the nasal bones
and piriform rim, the orbital rims and the front of the globes, the anterior surfaces of maxilla
and zygoma, alveolar bone and teeth and the anterior mandible are removed, cut along a smooth
surface, so that the skin render shows no eye sockets, nose aperture, teeth or jaw line; never a
voxel the skull encloses, never the neck's arteries.

The cut, in the subject's frame (the array viewed in RAS order: axes to the Right, Anterior,
Superior; a view, no copy):

1. the face mask's back in each column along the anterior axis: the most posterior mask voxel
   (the front of the facial skeleton, or the orbital rim plane);
2. skeletal columns: those with bone (``bone_hu``) within ``bone_search_mm`` behind that back
   (the orbits, nose, cheeks, teeth and jaw; not the soft tissue under the chin);
3. the cut lies ``depth_mm`` behind the back in the skeletal columns, smoothed across columns
   by a Gaussian of ``smooth_mm`` (normalised by the columns' own weight); it blends into the
   skin where few columns around are skeletal (a smoothstep of their smoothed share between
   the two ``support`` values). It never comes within ``brain_clearance_mm`` of what the skull
   encloses, in 3D (:meth:`~ctadeface.deface.skull.Intracranial.grown`): per column it is held
   in front of a smooth envelope over that clearance (a maximum filter and a Gaussian of half
   ``smooth_mm``, so a cut held there draws neither a brow nor the brain's contour), smoothed
   again and held again. Over the brow and the forehead the cut is as deep as that allows;
4. added to the mask: everything from the cut forward to ``front_mm`` in front of the skin.
   Whatever the skull encloses is dropped again (:mod:`ctadeface.deface.skull`);
5. the seal: the mask's voxels from the cut to ``seal_mm`` in front of it (never beyond the
   skin) get ``seal_hu`` rather than the fill. A cut through the face opens the air cavities
   behind it (nasal cavity, maxillary sinuses, orbits); filled with air they would render as
   a face's pits, sealed the front renders as one smooth surface. The cavities themselves stay.

Units: HU and mm; arrays are indexed (i, j, k) as stored, ``affine`` maps them to RAS+ mm.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from nibabel import orientations
from scipy import ndimage

from ctadeface.body import Volume, occupied
from ctadeface.deface.fill import Seal
from ctadeface.deface.skull import SkullParams, intracranial
from ctadeface.hu import BODY_HU


@dataclass(frozen=True)
class StrictParams:
    """The strict cut (HU, mm); see the module docstring."""

    depth_mm: float = 18.0
    smooth_mm: float = 20.0
    bone_hu: float = 300.0
    bone_search_mm: float = 20.0
    brain_clearance_mm: float = 6.0
    support: tuple[float, float] = (0.2, 0.6)
    front_mm: float = 10.0
    seal_mm: float = 5.0
    seal_hu: float = 40.0
    skull: SkullParams = field(default_factory=SkullParams)


@dataclass(frozen=True)
class StrictMask:
    """What strict mode replaces.

    Attributes:
        mask: every replaced voxel (bool, stored order): the face mask and the cut's front.
        seal: the part of ``mask`` set to soft tissue rather than the fill.
    """

    mask: np.ndarray
    seal: Seal


def _ras_view(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``array`` (stored order) as a view whose axes run R, A, S (nearest axes to an oblique
    affine), by transposes and flips only."""
    ornt = orientations.io_orientation(np.asarray(affine, float))
    order = np.argsort(ornt[:, 0])  # stored axis of each RAS axis
    view = np.transpose(array, order)
    flips = tuple(slice(None, None, -1) if ornt[a, 1] < 0 else slice(None) for a in order)
    return view[flips]


def strict_mask(
    mask: np.ndarray,
    hu: Volume,
    spacing: tuple[float, float, float],
    affine: np.ndarray,
    params: StrictParams = StrictParams(),
) -> StrictMask:
    """``mask`` (the face mask, bool, stored order) plus the front of the facial skeleton, and
    its seal; new bool arrays of the same shape and memory order."""
    out = mask.copy(order="K")
    seal = np.zeros_like(out)
    result = StrictMask(out, Seal(seal, params.seal_hu))
    if not mask.any():
        return result
    ornt = orientations.io_orientation(np.asarray(affine, float))
    ras_spacing = [float(spacing[int(a)]) for a in np.argsort(ornt[:, 0])]
    m = _ras_view(mask, affine)
    o = _ras_view(out, affine)
    # the mask's box, grown backwards by the bone search and the cut (RAS indices)
    idx = occupied(m)
    back_pad = int(np.ceil((params.bone_search_mm + params.depth_mm) / ras_spacing[1])) + 1
    box = (
        slice(int(idx[0][0]), int(idx[0][-1]) + 1),
        slice(max(0, int(idx[1][0]) - back_pad), int(idx[1][-1]) + 1),
        slice(int(idx[2][0]), int(idx[2][-1]) + 1),
    )
    sub = m[box]
    values = _ras_values(hu, affine, mask.shape, box)
    ny = sub.shape[1]
    ys = np.arange(ny)[None, :, None]
    has = sub.any(axis=1)  # (x, z) columns of the face mask
    back = np.where(has, np.argmax(sub, axis=1), ny)  # most posterior mask voxel
    search = int(np.ceil(params.bone_search_mm / ras_spacing[1]))
    behind = (ys < back[:, None, :]) & (ys >= back[:, None, :] - search)
    skeletal = has & (behind & (values > params.bone_hu)).any(axis=1)
    depth = params.depth_mm / ras_spacing[1]
    sigma = [params.smooth_mm / ras_spacing[0], params.smooth_mm / ras_spacing[2]]
    inside = intracranial(hu, spacing, params.skull)
    floor = np.zeros(back.shape)  # the box's back: no limit
    if inside is not None:
        # what lies within the clearance of the skull's inside, in 3D (a column's neighbours'
        # brain counts too: thick slices put the frontal lobe's floor between columns)
        guard = inside.grown(params.brain_clearance_mm, spacing)
        near = _ras_view(guard.voxels(tuple(slice(0, n) for n in mask.shape)), affine)[box]
        front_of_near = ny - 1 - np.argmax(near[:, ::-1, :], axis=1)
        floor = np.where(near.any(axis=1), front_of_near + 1.0, 0.0)
        # a smooth envelope over it, so that a cut held there draws no brain's contour
        span = [max(1, round(s / 2)) for s in sigma]
        top = ndimage.maximum_filter(floor, size=(2 * span[0] + 1, 2 * span[1] + 1))
        floor = np.maximum(ndimage.gaussian_filter(top, [s / 2 for s in sigma]), floor)
    if not skeletal.any():
        return result
    weight = ndimage.gaussian_filter(skeletal.astype(np.float64), sigma, mode="constant")
    full = ndimage.gaussian_filter(np.where(skeletal, back - depth, 0.0), sigma, mode="constant")
    full = np.divide(full, weight, out=np.zeros_like(full), where=weight > 1e-6)
    body = values > BODY_HU
    skin = np.where(body.any(axis=1), ny - 1 - np.argmax(body[:, ::-1, :], axis=1), -1)
    # the cut blends into the skin: full depth where the columns around are mostly skeletal,
    # none where few are (a smoothstep of the smoothed skeletal share, so no kink either way)
    share = weight / max(float(weight.max()), 1e-6)
    lo, hi = params.support
    taper = np.clip((share - lo) / (hi - lo), 0.0, 1.0)
    taper = taper * taper * (3 - 2 * taper)
    cut = np.where(taper > 0, skin - taper * (skin - full), np.inf)
    cut = _smooth_above(np.maximum(cut, floor), floor, sigma)
    reach = params.front_mm / ras_spacing[1]  # the air in front of the skin that goes too
    o[box] |= (ys >= cut[:, None, :]) & (ys <= skin[:, None, :] + reach)
    seal_top = np.minimum(cut + params.seal_mm / ras_spacing[1], skin)
    _ras_view(seal, affine)[box] |= (ys >= cut[:, None, :]) & (ys <= seal_top[:, None, :])
    if inside is not None:
        everything = tuple(slice(0, n) for n in out.shape)
        inside.clear(out, everything)
        inside.clear(seal, everything)
    return result


def _smooth_above(cut: np.ndarray, floor: np.ndarray, sigma: list[float]) -> np.ndarray:
    """``cut`` (anterior index per column; inf = no cut) smoothed by a Gaussian over the
    columns that have one, then held at ``floor`` or in front of it."""
    has = np.isfinite(cut)
    weight = ndimage.gaussian_filter(has.astype(np.float64), sigma, mode="constant")
    total = ndimage.gaussian_filter(np.where(has, cut, 0.0), sigma, mode="constant")
    smooth = np.divide(total, weight, out=np.zeros_like(total), where=weight > 1e-6)
    return np.where(has, np.maximum(smooth, floor), np.inf)


def _ras_values(
    hu: Volume, affine: np.ndarray, shape: tuple[int, ...], box: tuple[slice, ...]
) -> np.ndarray:
    """HU of the RAS-view ``box``, read from the stored volume (a view slices to HU)."""
    ornt = orientations.io_orientation(np.asarray(affine, float))
    order = np.argsort(ornt[:, 0])
    stored: list[slice] = [slice(None)] * 3
    for ras_axis, stored_axis in enumerate(order):
        b = box[ras_axis]
        n = shape[int(stored_axis)]
        if ornt[int(stored_axis), 1] < 0:  # flipped: RAS index r is stored index n - 1 - r
            stored[int(stored_axis)] = slice(n - b.stop, n - b.start)
        else:
            stored[int(stored_axis)] = b
    block = np.asarray(hu[tuple(stored)], dtype=np.float32)
    return _ras_view(block, affine)
