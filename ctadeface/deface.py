"""Replace the masked voxels of a CT by a fill value; leave every other voxel bit-identical.

Fill policies (``shared/docs/mask-definition.md``):

- ``p10``: the image's 10th percentile (CTA-DEFACE's choice; air in a normal field of view);
- ``air``: a constant -1000 HU;
- ``noise``: air with Gaussian noise matching the image's own background air (mean, std in HU).

All values are computed in HU and converted to the image's stored units (rounded and clipped for
integer dtypes), so the output keeps the source dtype and scaling.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .io import CTImage

log = logging.getLogger(__name__)

FILL_POLICIES = ("p10", "air", "noise")
AIR_HU = -1000.0
#: Voxels within this HU range count as background air for the ``noise`` policy; it excludes
#: the -2048/-3024 padding some scanners write outside the reconstructed field of view.
AIR_RANGE_HU = (-1150.0, -850.0)


@dataclass(frozen=True)
class Fill:
    """What replaced the masked voxels.

    Attributes:
        policy: one of FILL_POLICIES.
        value_hu: the fill value in HU (for ``noise``: the mean).
        std_hu: standard deviation of the noise in HU (0 for constant fills).
        stored_value: ``value_hu`` in the image's stored units, after rounding/clipping.
    """

    policy: str
    value_hu: float
    std_hu: float
    stored_value: float


def _to_stored(image: CTImage, hu: np.ndarray | float) -> np.ndarray:
    """HU -> stored units of ``image``, rounded and clipped for integer dtypes."""
    stored = np.asarray(image.to_stored(np.asarray(hu, dtype=np.float64)))
    dtype = image.data.dtype
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        stored = np.clip(np.rint(stored), info.min, info.max)
    return stored.astype(dtype)


def choose_fill(image: CTImage, policy: str) -> Fill:
    """Compute the fill for ``image`` under ``policy`` (statistics over the whole image)."""
    if policy == "p10":
        # The percentile of the stored values maps to HU exactly (scaling is monotonic).
        p10_stored = float(np.percentile(image.data, 10))
        value = p10_stored * image.slope + image.inter
        if value < AIR_RANGE_HU[0]:
            log.warning(
                "%s: 10th percentile is %.0f HU (padding outside the field of view?); "
                "consider --fill air",
                image.path,
                value,
            )
        std = 0.0
    elif policy == "air":
        value, std = AIR_HU, 0.0
    elif policy == "noise":
        value, std = background_air(image)
    else:
        raise ValueError(f"unknown fill policy {policy!r}; choose from {FILL_POLICIES}")
    stored = float(_to_stored(image, value))
    return Fill(policy=policy, value_hu=float(value), std_hu=float(std), stored_value=stored)


def background_air(image: CTImage) -> tuple[float, float]:
    """Mean and standard deviation (HU) of the image's air voxels; (-1000, 0) if it has none."""
    lo = image.to_stored(AIR_RANGE_HU[0])
    hi = image.to_stored(AIR_RANGE_HU[1])
    lo, hi = min(lo, hi), max(lo, hi)
    air = image.data[(image.data >= lo) & (image.data <= hi)]
    if air.size < 100:
        return AIR_HU, 0.0
    hu = air.astype(np.float64) * image.slope + image.inter
    return float(hu.mean()), float(hu.std())


def apply_fill(image: CTImage, mask: np.ndarray, fill: Fill, *, seed: int = 0) -> np.ndarray:
    """A copy of ``image.data`` with the voxels of ``mask`` replaced by ``fill``.

    Args:
        image: the source; its ``data`` is not modified.
        mask: bool array of the same shape (True = face, replaced).
        fill: from :func:`choose_fill`.
        seed: seeds the ``noise`` policy, so the same input gives the same output.
    """
    if mask.shape != image.data.shape:
        raise ValueError(f"mask shape {mask.shape} != image shape {image.data.shape}")
    out = image.data.copy()
    if fill.std_hu > 0:
        rng = np.random.default_rng(seed)
        n = int(np.count_nonzero(mask))
        out[mask] = _to_stored(image, rng.normal(fill.value_hu, fill.std_hu, size=n))
    else:
        out[mask] = np.asarray(fill.stored_value).astype(out.dtype)
    return out


@dataclass(frozen=True)
class PostProcess:
    """The fixed mask post-processing of mask-definition.md (HU and mm).

    Attributes:
        bone_hu: voxels above this are bone or teeth and are never masked (enhanced facial
            vessels, 200-500 HU, stay in the mask).
        air_hu: voxels below this count as air, into which the margin may grow.
        margin_mm: thickness of the air margin added around the mask ("bulky masks are good
            masks": the filled region must not trace the face).
    """

    bone_hu: float = 600.0
    air_hu: float = -500.0
    margin_mm: float = 6.0


def postprocess(
    mask: np.ndarray,
    hu: np.ndarray,
    spacing: tuple[float, float, float],
    params: PostProcess = PostProcess(),
) -> np.ndarray:
    """Grow ``mask`` by ``margin_mm`` into air and drop bone; a new bool array.

    ``mask`` and ``hu`` share shape and axes (i, j, k); ``spacing`` is mm per axis. Only the
    bounding box of the mask (plus the margin) is processed, so large scans stay cheap.
    """
    from scipy import ndimage

    if mask.shape != hu.shape:
        raise ValueError(f"mask shape {mask.shape} != image shape {hu.shape}")
    if not mask.any():
        return mask.copy()
    pad = [int(np.ceil(params.margin_mm / s)) + 1 for s in spacing]
    box = tuple(
        slice(max(0, int(idx[0]) - p), min(n, int(idx[-1]) + p + 1))
        for idx, p, n in zip(_occupied(mask), pad, mask.shape, strict=True)
    )
    sub_mask, sub_hu = mask[box], hu[box]
    if params.margin_mm > 0:
        distance = ndimage.distance_transform_edt(~sub_mask, sampling=spacing)
        grown = sub_mask | ((distance <= params.margin_mm) & (sub_hu < params.air_hu))
    else:
        grown = sub_mask.copy()
    grown &= sub_hu <= params.bone_hu
    out = np.zeros_like(mask, dtype=bool)
    out[box] = grown
    return out


def _occupied(mask: np.ndarray) -> list[np.ndarray]:
    """For each axis, the indices of the slices that hold any True voxel."""
    axes = range(mask.ndim)
    return [np.flatnonzero(mask.any(axis=tuple(a for a in axes if a != ax))) for ax in axes]
