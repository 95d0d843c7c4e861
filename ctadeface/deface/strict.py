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
   the two ``support`` values). Columns where the cut would come within ``brain_clearance_mm``
   of what the skull encloses (the forehead, the brow) are not skeletal: the front of the skull
   stays there; and nowhere does the cut come nearer than that;
4. added to the mask: everything from the cut forward to ``front_mm`` in front of the skin.
   Whatever the skull encloses is dropped again (:mod:`ctadeface.deface.skull`).

A cut through the face opens the air cavities behind it (nasal cavity, maxillary sinuses) to a
skin render: with an air fill they stay visible as a pit in the middle of the smooth front
(``docs/verification.md``).

Units: HU and mm; arrays are indexed (i, j, k) as stored, ``affine`` maps them to RAS+ mm.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from nibabel import orientations
from scipy import ndimage

from ctadeface.body import Volume, occupied
from ctadeface.deface.skull import SkullParams, intracranial
from ctadeface.hu import BODY_HU


@dataclass(frozen=True)
class StrictParams:
    """The strict cut (HU, mm); see the module docstring."""

    depth_mm: float = 18.0
    smooth_mm: float = 20.0
    bone_hu: float = 300.0
    bone_search_mm: float = 20.0
    brain_clearance_mm: float = 4.0
    support: tuple[float, float] = (0.2, 0.6)
    front_mm: float = 10.0
    skull: SkullParams = field(default_factory=SkullParams)


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
) -> np.ndarray:
    """``mask`` (the face mask, bool, stored order) plus the front of the facial skeleton; a new
    bool array of the same shape and memory order."""
    out = mask.copy(order="K")
    if not mask.any():
        return out
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
    clearance = params.brain_clearance_mm / ras_spacing[1]
    inside = intracranial(hu, spacing, params.skull)
    floor = np.full(back.shape, -np.inf)
    if inside is not None:
        brain = _ras_view(inside.voxels(tuple(slice(0, n) for n in mask.shape)), affine)[box]
        has_brain = brain.any(axis=1)
        front_of_brain = ny - 1 - np.argmax(brain[:, ::-1, :], axis=1)
        floor = np.where(has_brain, front_of_brain + clearance, -np.inf)
        # the skull's front (forehead, brow) stays where the cut would come near the brain
        skeletal &= ~(floor > back - depth)
    if not skeletal.any():
        return out
    sigma = [params.smooth_mm / ras_spacing[0], params.smooth_mm / ras_spacing[2]]
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
    cut = np.maximum(cut, floor)  # never within the clearance of what the skull encloses
    reach = params.front_mm / ras_spacing[1]  # the air in front of the skin that goes too
    add = (ys >= cut[:, None, :]) & (ys <= skin[:, None, :] + reach)
    o[box] |= add
    if inside is not None:
        inside.clear(out, tuple(slice(0, n) for n in out.shape))
    return out


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
