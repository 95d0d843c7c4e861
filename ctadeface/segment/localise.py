"""Where along the body's long axis the face mask can lie: the head slab.

The face mask (``docs/mask-definition.md``) reaches from the forehead down to the upper neck
(chin, hyoid). Measured from the top of the body, that is less than :data:`HEAD_SLAB_MM`: an
adult's vertex-to-menton height is 21-26 cm and the hyoid lies 3-5 cm below the menton. So the
fast strategy runs the network only on the slab and its body margin
(``ctadeface.segment.fast``); below them (the lower neck, shoulders, chest of an
arch-to-vertex CTA) the mask is background. The slab ends sooner where
the body first widens beyond :data:`SHOULDER_RATIO` times the head's largest cross-section
(the base of the neck, the shoulders: well below the hyoid), as long as that lies below the
head (:data:`HEAD_MM`). A body whose top is already
wider than any head (:data:`TRUNK_CM2`) begins in the trunk (a chest or shoulder field of
view): it holds no face, and the slab is empty. A scan that ends before the slab does is
unchanged.

The cross-sections are those of the body cells (``ctadeface.body.body_cells``: voxels above the
body threshold on a ~4 mm grid, their largest connected part), so lungs, which lie below it,
do not count, and a head holder or shell attached to the head does.

Arrays are nnU-Net's (k, j, i).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

#: From the top of the body down to here (mm) the face mask can reach (module docstring).
HEAD_SLAB_MM = 320.0
#: A body whose top (the median over its first :data:`TOP_MM`) has a cross-section above this
#: (cm²) begins in the trunk. A head's largest is 150-300 cm² (up to 310 cm² among the 206
#: shared CTs, thermoplastic shells included), the shoulders' and chest's 500-1,000 cm².
TRUNK_CM2 = 450.0
#: Depth of the top of the body over which :data:`TRUNK_CM2` is judged (mm); a median, so that
#: a small device above the head does not decide.
TOP_MM = 20.0
#: The head's largest cross-section is taken over this depth from the top of the body (mm):
#: vertex to mid-face, where the skull is widest; the neck below is narrower.
HEAD_MM = 150.0
#: Below that, the first cross-section larger than this multiple of the head's largest is the
#: base of the neck and the shoulders (or a chest): the slab ends above it.
SHOULDER_RATIO = 1.5


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


class SlabEnd(StrEnum):
    """What ends the head slab."""

    SLAB = "head slab"  # HEAD_SLAB_MM below the top of the body
    SHOULDERS = "shoulders"  # the body widens into the shoulders first (SHOULDER_RATIO)
    SCAN = "scan"  # the scan (or the body) ends first: the slab keeps every cell
    TRUNK = "trunk only"  # the body begins in the trunk: no slab


@dataclass(frozen=True)
class HeadSlab:
    """The part of the body the face mask can lie in, along the superior axis.

    Attributes:
        depth_mm: how far below the top of the body it reaches (0 when there is none).
        end: what ends it.
    """

    depth_mm: float
    end: SlabEnd


def cross_sections(
    cells: np.ndarray, steps: list[int], spacing: tuple[float, ...], up: Superior
) -> np.ndarray:
    """The body's cross-section (cm²) in each cell slice across ``up.axis``, ordered from the
    superior end of the array down."""
    others = tuple(a for a in range(3) if a != up.axis)
    cell_cm2 = float(np.prod([steps[a] * float(spacing[a]) for a in others])) / 100.0
    sections = cells.sum(axis=others) * cell_cm2
    return sections[::-1] if up.sign > 0 else sections


def find_slab(sections: np.ndarray, cell_mm: float) -> tuple[int, int, HeadSlab]:
    """(first, stop, slab): the slab as cell slices ``[first, stop)`` of ``sections``
    (:func:`cross_sections`, ``cell_mm`` apart), from the top of the body down; first == stop
    when there is none."""
    body = np.flatnonzero(sections)
    if body.size == 0:
        return 0, len(sections), HeadSlab(0.0, SlabEnd.SCAN)
    top = int(body[0])
    at_top = sections[top : top + max(1, round(TOP_MM / cell_mm))]
    if float(np.median(at_top)) > TRUNK_CM2:
        return top, top, HeadSlab(0.0, SlabEnd.TRUNK)
    stop, end = top + int(np.floor(HEAD_SLAB_MM / cell_mm)) + 1, SlabEnd.SLAB
    below = top + max(1, round(HEAD_MM / cell_mm))
    wide = np.flatnonzero(sections[below:stop] > SHOULDER_RATIO * sections[top:below].max())
    if wide.size:
        stop, end = below + int(wide[0]), SlabEnd.SHOULDERS
    elif stop > int(body[-1]):
        stop, end = len(sections), SlabEnd.SCAN
    return top, stop, HeadSlab(round((stop - top) * cell_mm, 1), end)


def head_slab(
    cells: np.ndarray, steps: list[int], spacing: tuple[float, ...], up: Superior
) -> tuple[np.ndarray, HeadSlab]:
    """``cells`` (bool, on the grid subsampled by ``steps``; ``spacing`` mm per axis of the
    source) without the cells below the head slab (:func:`find_slab`; ``cells`` itself when it
    keeps them all), and the slab."""
    sections = cross_sections(cells, steps, spacing, up)
    _, stop, slab = find_slab(sections, steps[up.axis] * float(spacing[up.axis]))
    if stop >= len(sections):
        return cells, slab
    depth = np.arange(cells.shape[up.axis])
    if up.sign > 0:
        depth = depth[::-1]
    shape = [1, 1, 1]
    shape[up.axis] = -1
    return cells & (depth < stop).reshape(shape), slab
