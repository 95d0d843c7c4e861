"""A gantry-tilted series on an untilted grid, and its mask back on the tilted one.

A tilted series is a regular grid whose slice step leaves the slice normal: its affine's third
column has an in-plane part (a shear). The pipeline runs on an untilted grid instead: same i and
j axes and spacing, k along the normal at the slices' distance, extended in plane so that it
holds every source voxel; values are interpolated linearly (outside the source: the image's
minimum, i.e. air). The mask and the defaced values go back to the source grid by nearest
neighbour, so the written series keeps the source's geometry, and its voxels outside the mask
their stored values (``ctadeface.dicom.write``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ctadeface.dicom.volume import TILT_TOLERANCE_MM
from ctadeface.io import CTImage


def in_plane_step(affine: np.ndarray) -> np.ndarray:
    """The in-plane part (mm, RAS+) of the slice step of ``affine``: zero when untilted."""
    axes = affine[:3, :3]
    normal = np.cross(axes[:, 0], axes[:, 1])
    normal /= np.linalg.norm(normal)
    step = axes[:, 2]
    return step - (step @ normal) * normal


def is_tilted(affine: np.ndarray) -> bool:
    return float(np.linalg.norm(in_plane_step(affine))) > TILT_TOLERANCE_MM


def tilt_degrees(affine: np.ndarray) -> float:
    """The angle between the slice step and the slice normal (degrees)."""
    step = affine[:3, 2]
    return float(
        np.degrees(np.arcsin(np.linalg.norm(in_plane_step(affine)) / np.linalg.norm(step)))
    )


@dataclass(frozen=True, eq=False)
class Untilted:
    """An image resampled off a tilted grid, and how to go back.

    Attributes:
        image: on the untilted grid (the source's dtype and scaling).
        source_affine, source_shape: the tilted grid.
    """

    image: CTImage
    source_affine: np.ndarray
    source_shape: tuple[int, int, int]

    def back(self, values: np.ndarray) -> np.ndarray:
        """``values`` on the untilted grid (a mask, the defaced image) on the source grid, by
        nearest neighbour."""
        return _resample(values, self.image.affine, self.source_affine, self.source_shape, 0)


def _resample(
    values: np.ndarray,
    affine: np.ndarray,
    target_affine: np.ndarray,
    shape: tuple[int, int, int],
    order: int,
    cval: float = 0.0,
) -> np.ndarray:
    """``values`` (on ``affine``'s grid) on the grid of ``target_affine`` and ``shape``."""
    from scipy import ndimage

    to_source = np.linalg.inv(affine) @ target_affine
    kind = values.dtype
    source = values.view(np.uint8) if kind.kind == "b" else values
    out = ndimage.affine_transform(
        source if order == 0 else source.astype(np.float32),
        to_source[:3, :3],
        offset=to_source[:3, 3],
        output_shape=shape,
        order=order,
        mode="constant",
        cval=cval,
        prefilter=False,
    )
    if kind.kind == "b":
        return out.astype(bool)
    if np.issubdtype(kind, np.integer):
        info = np.iinfo(kind)
        out = np.clip(np.rint(out), info.min, info.max)
    return out.astype(kind)


def untilt(image: CTImage) -> Untilted:
    """``image`` on the untilted grid that holds it (module docstring)."""
    axes = image.affine[:3, :3]
    normal = np.cross(axes[:, 0], axes[:, 1])
    normal /= np.linalg.norm(normal)
    straight = image.affine.copy()
    straight[:3, 2] = (axes[:, 2] @ normal) * normal
    # the source's corners in the untilted grid's voxels: the extent to cover
    n = np.array(image.data.shape) - 1
    corners = np.array([[i, j, k, 1.0] for i in (0, n[0]) for j in (0, n[1]) for k in (0, n[2])])
    at = (np.linalg.inv(straight) @ image.affine @ corners.T).T[:, :3]
    low, high = np.floor(at.min(axis=0) + 1e-6), np.ceil(at.max(axis=0) - 1e-6)
    straight[:3, 3] = (straight @ [*low, 1.0])[:3]
    shape = tuple(int(v) for v in high - low + 1)
    air = float(image.data.min())
    data = _resample(image.data, image.affine, straight, (shape[0], shape[1], shape[2]), 1, air)
    header = image.header.copy()
    header.set_data_shape(data.shape)
    header.set_sform(straight, code=1)
    header.set_qform(straight, code=1)
    spacing = tuple(float(v) for v in np.linalg.norm(straight[:3, :3], axis=0))
    moved = replace(
        image,
        data=data,
        affine=straight,
        header=header,
        spacing=(spacing[0], spacing[1], spacing[2]),
    )
    return Untilted(
        moved, image.affine.copy(), (image.data.shape[0], image.data.shape[1], image.data.shape[2])
    )
