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
from dataclasses import dataclass, field

import numpy as np

from .boxes import occupied
from .io import CTImage, HUView
from .margin import MarginParams, with_margin
from .skull import SkullParams, intracranial

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
    return Fill(policy=policy, value_hu=float(value), std_hu=float(std), stored_value=stored)


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
    image: CTImage, mask: np.ndarray, fill: Fill, *, seed: int = 0, in_place: bool = False
) -> np.ndarray:
    """``image.data`` with the voxels of ``mask`` replaced by ``fill``.

    Args:
        image: the source; its ``data`` is not modified unless ``in_place``.
        mask: bool array of the same shape (True = face, replaced).
        fill: from :func:`choose_fill`.
        seed: seeds the ``noise`` policy, so the same input gives the same output.
        in_place: fill ``image.data`` itself and return it (saves a copy of the volume when
            the source values are not needed afterwards).
    """
    if mask.shape != image.data.shape:
        raise ValueError(f"mask shape {mask.shape} != image shape {image.data.shape}")
    out = image.data if in_place else image.data.copy()
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
        air_hu: voxels below this count as air (the margin is air; the tissue is not).
        margin: the air margin in front of the mask's tissue ("bulky masks are good masks":
            the filled region must not trace the face). It is computed from the tissue, not
            taken from the network (:func:`ctadeface.margin.with_margin`: outside air whose
            nearest patient voxel is the mask's tissue, as in the phantoms' exact mask); the
            network's own mask off the patient stays only within the margin's reach of the
            patient, and air the patient encloses never stays. None keeps the network's mask as
            drawn.
        body_reach_mm: mask voxels farther than this from the patient (the largest connected
            part above ``air_hu``, sampled on ~4 mm cells, as the fast path finds it) are not
            face and are dropped (network false positives in the air, on a table or a wrap);
            0 keeps them.
        skull: voxels that the skull encloses (brain, CSF, intracranial vessels:
            :func:`ctadeface.skull.intracranial` with these parameters) are dropped from the
            mask, whatever the model drew; None keeps them.
    """

    bone_hu: float = 600.0
    air_hu: float = -500.0
    margin: MarginParams | None = field(default_factory=MarginParams)
    body_reach_mm: float = 30.0
    skull: SkullParams | None = field(default_factory=SkullParams)


def postprocess(
    mask: np.ndarray,
    hu: np.ndarray | HUView,
    spacing: tuple[float, float, float],
    params: PostProcess = PostProcess(),
) -> np.ndarray:
    """Keep the mask's tissue, add the air margin in front of it (``params.margin``), drop bone,
    what lies beyond ``body_reach_mm`` of the patient and what the skull encloses; a new bool
    array.

    ``mask`` and ``hu`` share shape and axes (i, j, k); ``spacing`` is mm per axis. Only the
    bounding box of the mask (plus the margin) is processed, so large scans stay cheap; ``hu``
    may be a :class:`~ctadeface.io.HUView`, converted one slab at a time.
    """
    if mask.shape != hu.shape:
        raise ValueError(f"mask shape {mask.shape} != image shape {hu.shape}")
    if not mask.any():
        return mask.copy()
    reach, strides = 0.0, [1, 1, 1]
    if params.margin is not None:
        reach, strides = params.margin.reach_mm(spacing), params.margin.strides(spacing)
    pad = [int(np.ceil(reach / s)) + n for s, n in zip(spacing, strides, strict=True)]
    box = tuple(
        slice(max(0, int(idx[0]) - p), min(n, int(idx[-1]) + p + 1))
        for idx, p, n in zip(occupied(mask), pad, mask.shape, strict=True)
    )
    sub_mask = mask[box]
    if params.body_reach_mm > 0:
        sub_mask = sub_mask & _near_body(hu, spacing, box, params)
    air, keep = _classify(hu, box, params)
    out = np.zeros_like(mask, dtype=bool)
    if params.margin is not None:
        out[box] = with_margin(sub_mask & keep, ~air, spacing, params.margin) & keep
    else:
        out[box] = sub_mask & keep
    if params.skull is not None:
        inside = intracranial(hu, spacing, params.skull)
        if inside is not None:
            dropped = inside.clear(out[box], box)
            if dropped:
                log.info("post-processing: %d mask voxels inside the skull dropped", dropped)
    return out


def _classify(
    hu: np.ndarray | HUView, box: tuple[slice, ...], params: PostProcess
) -> tuple[np.ndarray, np.ndarray]:
    """(air, not bone) on ``box``: HU below ``air_hu``, and at most ``bone_hu``; read in slabs
    so that no float32 copy of the whole box is made."""
    shape = tuple(b.stop - b.start for b in box)
    # Fortran order, as NIfTI data and the masks made from them: slabs along the last axis are
    # contiguous, and no later operation has to mix memory orders
    air, keep = np.empty(shape, bool, order="F"), np.empty(shape, bool, order="F")
    last = box[2]
    for start in range(last.start, last.stop, 16):
        stop = min(last.stop, start + 16)
        local = slice(start - last.start, stop - last.start)
        values = np.asarray(hu[(box[0], box[1], slice(start, stop))])
        np.less(values, params.air_hu, out=air[..., local])
        np.less_equal(values, params.bone_hu, out=keep[..., local])
    return air, keep


def _near_body(
    hu: np.ndarray | HUView,
    spacing: tuple[float, float, float],
    box: tuple[slice, ...],
    params: PostProcess,
) -> np.ndarray:
    """Voxels of ``box`` within ``params.body_reach_mm`` of the patient's body cells (a voxel
    takes the distance of its nearest cell)."""
    from scipy import ndimage

    from . import grid  # imports torch: not needed by light commands that import this module

    found = grid.body_cells(hu, spacing, params.air_hu)
    if found is None:
        return np.zeros(tuple(b.stop - b.start for b in box), dtype=bool)
    cells, steps = found
    sampling = [st * s for st, s in zip(steps, spacing, strict=True)]
    distance = ndimage.distance_transform_edt(~cells, sampling=sampling)
    index = [
        np.clip(np.floor(np.arange(b.start, b.stop) / st + 0.5).astype(int), 0, n - 1)
        for b, st, n in zip(box, steps, cells.shape, strict=True)
    ]
    near = (distance <= params.body_reach_mm).T  # bool: 1 byte per voxel
    return near[np.ix_(*index[::-1])].T  # gathered in reverse axis order: Fortran order
