"""Where along the body's long axis the face mask can lie: the head slab.

The face mask (``docs/mask-definition.md``) reaches from the forehead down to the upper neck
(chin, hyoid). Measured from the top of the body, that is less than :data:`HEAD_SLAB_MM`: an
adult's vertex-to-menton height is 21-26 cm and the hyoid lies 3-5 cm below the menton. So the
fast strategy runs the network only on body within the slab; below it (the lower neck,
shoulders, chest of an arch-to-vertex CTA) the mask is background. A scan no taller than the
slab is unchanged.

Arrays are nnU-Net's (k, j, i); the body is the coarse cells of ``ctadeface.body.body_cells``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ctadeface.body import occupied

#: From the top of the body down to here (mm) the face mask can reach (module docstring).
HEAD_SLAB_MM = 320.0


@dataclass(frozen=True)
class Superior:
    """The array axis (of k, j, i) closest to the patient's superior direction, and whether
    the index grows (+1) or falls (-1) towards the head."""

    axis: int
    sign: int


def superior_of(affine: np.ndarray) -> Superior:
    """:class:`Superior` of a stored array (i, j, k) whose ``affine`` maps to RAS+ mm, for the
    same array in nnU-Net's (k, j, i) order."""
    axes = np.asarray(affine, float)[:3, :3]
    up = axes[2] / np.linalg.norm(axes, axis=0)
    stored_axis = int(np.argmax(np.abs(up)))
    return Superior(axis=2 - stored_axis, sign=1 if up[stored_axis] > 0 else -1)


def superior_of_codes(codes: str) -> Superior:
    """:class:`Superior` of a stored array in the orientation ``codes`` (e.g. ``RAS``), in
    nnU-Net's (k, j, i) order."""
    stored_axis = next(a for a, c in enumerate(codes.upper()) if c in "SI")
    return Superior(axis=2 - stored_axis, sign=1 if codes.upper()[stored_axis] == "S" else -1)


def head_slab(
    cells: np.ndarray, steps: list[int], spacing: tuple[float, ...], up: Superior
) -> np.ndarray:
    """``cells`` (bool, on the grid subsampled by ``steps``; ``spacing`` mm per axis of the
    source) without the cells lower than :data:`HEAD_SLAB_MM` below the top of the body."""
    along = occupied(cells)[up.axis]
    if along.size == 0:
        return cells
    cell_mm = steps[up.axis] * spacing[up.axis]
    depth = int(np.floor(HEAD_SLAB_MM / cell_mm))
    index = np.arange(cells.shape[up.axis])
    top = int(along[-1]) if up.sign > 0 else int(along[0])
    keep = index >= top - depth if up.sign > 0 else index <= top + depth
    if keep.all():
        return cells
    shape = [1, 1, 1]
    shape[up.axis] = -1
    return cells & keep.reshape(shape)
