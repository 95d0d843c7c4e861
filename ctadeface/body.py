"""Where the patient is: the body on coarse cells, its largest connected part, and the slices a
bool array occupies.

Shared by the stages that work on the body or on the bounding box of a mask: segmentation's
body box, the post-processing's box and its distance to the body, the skull's bone box, the air
margin's patient and the annotator's body. Axes are the array's own (i, j, k); ``spacing`` is mm
per array axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from scipy import ndimage


class Volume(Protocol):
    """A 3D array, or a view that slices to one (``io.HUView``: HU computed per slab)."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __getitem__(self, key: Any) -> np.ndarray: ...


def occupied(mask: np.ndarray) -> list[np.ndarray]:
    """For each of the three axes, the sorted indices of the slices that hold any True voxel
    (empty arrays when ``mask`` holds none). Two passes over ``mask``, whatever its size."""
    plane = np.any(mask, axis=2)
    return [
        np.flatnonzero(plane.any(axis=1)),
        np.flatnonzero(plane.any(axis=0)),
        np.flatnonzero(mask.any(axis=(0, 1))),
    ]


def bounding_box(mask: np.ndarray) -> tuple[slice, slice, slice]:
    """The smallest box of voxels that holds every True voxel of a 3D bool array, as slices
    along (i, j, k); empty slices (0:0) when it holds none."""
    idx = occupied(mask)
    if not all(len(i) for i in idx):
        return slice(0, 0), slice(0, 0), slice(0, 0)
    a, b, c = (slice(int(i[0]), int(i[-1]) + 1) for i in idx)
    return a, b, c


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected part of a bool array of any dimension (face neighbours, scipy's
    default); ``mask`` itself when it holds at most one part."""
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def body_cells(
    volume: Volume, spacing: Sequence[float], threshold: float, *, step_mm: float = 4.0
) -> tuple[np.ndarray, list[int]] | None:
    """The largest connected body part of ``volume`` on a grid subsampled to about ``step_mm``.

    Args:
        volume: the scan in stored units (any dtype), 3D.
        spacing: mm per array axis.
        threshold: voxels above it (stored units; e.g. ``hu.BODY`` converted) are body, table
            or head holder; padding (-1024/-2048/-3024 HU) and air stay below.

    Returns:
        (cells, steps): a bool array on ``volume[::steps[0], ::steps[1], ::steps[2]]``, or None
        when nothing in the scan is above ``threshold``.
    """
    steps = [max(1, int(step_mm // max(s, 1e-6))) for s in spacing]
    cells = np.asarray(volume[:: steps[0], :: steps[1], :: steps[2]]) > threshold
    if not cells.any():
        return None
    return largest_component(cells), steps
