"""Where a bool array holds anything: the slices along each axis that contain a True voxel, and
its largest connected part.

Shared by the stages that work on the bounding box of a mask or of a cell grid (segment's body
box, the post-processing's box, the skull's bone box) or on the patient as the largest body part
(segment's body cells, the air margin's patient, the annotator's body). Axes are the array's own
(i, j, k).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def occupied(mask: np.ndarray) -> list[np.ndarray]:
    """For each of the three axes, the sorted indices of the slices that hold any True voxel
    (empty arrays when ``mask`` holds none). Two passes over ``mask``, whatever its size."""
    plane = mask.any(axis=2)
    return [
        np.flatnonzero(plane.any(axis=1)),
        np.flatnonzero(plane.any(axis=0)),
        np.flatnonzero(mask.any(axis=(0, 1))),
    ]


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected part of a bool array of any dimension (face neighbours, scipy's
    default); ``mask`` itself when it holds at most one part."""
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))
