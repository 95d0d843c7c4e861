"""Replace the masked voxels of a CT by a fill value; leave every other voxel bit-identical.

Fill policies (``docs/mask-definition.md``):

- ``p10``: the image's 10th percentile (CTA-DEFACE's choice; air in a normal field of view);
- ``air``: a constant air value (``hu.AIR_HU``, -1000 HU);
- ``noise``: air with Gaussian noise matching the image's own background air (mean, std in HU).

A :class:`Seal` (strict mode) sets part of the masked voxels to a soft-tissue value instead, so
that the cut face's front renders as one smooth surface.

All values are computed in HU and converted to the image's stored units (rounded and clipped for
integer dtypes), so the output keeps the source dtype and scaling.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ctadeface.hu import AIR_HU
from ctadeface.io import CTImage

log = logging.getLogger(__name__)

FILL_POLICIES = ("p10", "air", "noise")
#: Voxels within this HU range count as background air for the ``noise`` policy; it excludes
#: the -2048/-3024 padding some scanners write outside the reconstructed field of view.
AIR_RANGE_HU = (-1150.0, -850.0)


@dataclass(frozen=True)
class Fill:
    """What replaced the masked voxels.

    Attributes:
        policy: one of FILL_POLICIES.
        value_hu: the fill value in HU (for ``noise``: the mean).
        noise_std_hu: standard deviation of the noise in HU (0 for constant fills).
        stored_value: ``value_hu`` in the image's stored units, after rounding/clipping.
    """

    policy: str
    value_hu: float
    noise_std_hu: float
    stored_value: float


@dataclass(frozen=True)
class Seal:
    """Masked voxels set to a soft-tissue value instead of the fill.

    Attributes:
        voxels: bool array of the image's shape, stored order; a subset of the mask.
        value_hu: their value, HU.
    """

    voxels: np.ndarray
    value_hu: float


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
        p10_stored = percentile(image.data, 10.0)
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
    return Fill(policy=policy, value_hu=float(value), noise_std_hu=float(std), stored_value=stored)


def percentile(data: np.ndarray, q: float) -> float:
    """``np.percentile(data, q)`` (linear method), from a histogram for 8/16-bit integers: no
    sorted or widened copy of the volume, memory bounded by a slab at a time."""
    if data.dtype.itemsize > 2 or data.dtype.kind not in "iu":
        return float(np.percentile(data, q))
    unsigned = np.dtype(f"u{data.dtype.itemsize}").newbyteorder(data.dtype.byteorder)
    offset = 0 if data.dtype.kind == "u" else 1 << (8 * data.dtype.itemsize - 1)
    counts = np.zeros(1 << (8 * data.dtype.itemsize), dtype=np.int64)
    flat = data.reshape(-1, order="A")  # no copy for C- or Fortran-contiguous arrays
    for start in range(0, flat.size, 1 << 22):
        block = flat[start : start + (1 << 22)].view(unsigned)
        counts += np.bincount(block.astype(np.uint16, copy=False), minlength=counts.size)
    if offset:  # two's complement: the negative half of the histogram comes first
        counts = np.roll(counts, offset)
    position = (flat.size - 1) * q / 100.0
    below = int(np.floor(position))
    cumulative = np.cumsum(counts)
    lo = int(np.searchsorted(cumulative, below, side="right")) - offset
    hi = int(np.searchsorted(cumulative, below + 1, side="right")) - offset
    if below + 1 >= flat.size:
        hi = lo
    return float(lo + (hi - lo) * (position - below))


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


def apply_fill(
    image: CTImage,
    mask: np.ndarray,
    fill: Fill,
    *,
    seed: int = 0,
    in_place: bool = False,
    seal: Seal | None = None,
) -> np.ndarray:
    """``image.data`` with the voxels of ``mask`` replaced by ``fill`` (those of ``seal`` by
    its value).

    Args:
        image: the source; its ``data`` is not modified unless ``in_place``.
        mask: bool array of the same shape (True = face, replaced).
        fill: from :func:`choose_fill`.
        seed: seeds the ``noise`` policy, so the same input gives the same output.
        in_place: fill ``image.data`` itself and return it (saves a copy of the volume when
            the source values are not needed afterwards).
        seal: voxels of the mask that get a soft-tissue value instead (strict mode).
    """
    if mask.shape != image.data.shape:
        raise ValueError(f"mask shape {mask.shape} != image shape {image.data.shape}")
    if seal is not None and (seal.voxels.shape != mask.shape or (seal.voxels & ~mask).any()):
        raise ValueError("the seal must be part of the mask")
    out = image.data if in_place else image.data.copy(order="K")  # keep the layout: no transpose
    if fill.noise_std_hu > 0:
        rng = np.random.default_rng(seed)
        n = int(np.count_nonzero(mask))
        out[mask] = _to_stored(image, rng.normal(fill.value_hu, fill.noise_std_hu, size=n))
    else:
        out[mask] = np.asarray(fill.stored_value).astype(out.dtype)
    if seal is not None:
        out[seal.voxels] = _to_stored(image, seal.value_hu)
    return out
