"""Where a bool array holds anything: the slices along each axis that contain a True voxel.

Shared by the stages that work on the bounding box of a mask or of a cell grid (segment's body
box, the post-processing's box, the skull's bone box). Axes are the array's own (i, j, k).
"""

from __future__ import annotations

import numpy as np


def occupied(mask: np.ndarray) -> list[np.ndarray]:
    """For each of the three axes, the sorted indices of the slices that hold any True voxel
    (empty arrays when ``mask`` holds none). Two passes over ``mask``, whatever its size."""
    plane = mask.any(axis=2)
    return [
        np.flatnonzero(plane.any(axis=1)),
        np.flatnonzero(plane.any(axis=0)),
        np.flatnonzero(mask.any(axis=(0, 1))),
    ]
