"""The QC figure of one scan: skin renders before and after defacing, and the mask on two
slices; encoded as PNG without dependencies; and its thumbnail (JPEG) for pages of many scans.

Layout: the renders at one isosurface level before (top row) and after (middle row), yaw from
-60 to +60 degrees left to right, and the mask (red) on a sagittal and an axial slice through its
centre (bottom row). Volumes are indexed (i, j, k) as stored; ``affine`` maps voxels to world
RAS+ mm.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ctadeface.hu import BODY_HU, OUTSIDE_HU
from ctadeface.verify.render import Render

#: Height of the caption strip, pixels.
CAPTION_PX = 22
#: Width of a figure's thumbnail, pixels (the height keeps the aspect ratio), and its JPEG quality.
THUMBNAIL_PX = 320
THUMBNAIL_QUALITY = 85


def _fit(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` (H, W[, 3]) scaled to fit a ``size`` square, centred on black."""
    h, w = image.shape[:2]
    z = size / max(h, w)
    zooms = (z, z) + ((1,) if image.ndim == 3 else ())
    small = ndimage.zoom(image.astype(np.float32), zooms, order=1, grid_mode=True, mode="nearest")
    small = small[:size, :size]
    out = np.zeros((size, size, *image.shape[2:]), np.float32)
    r0, c0 = (size - small.shape[0]) // 2, (size - small.shape[1]) // 2
    out[r0 : r0 + small.shape[0], c0 : c0 + small.shape[1]] = small
    return out


def _slice(
    vol: np.ndarray,
    affine: np.ndarray,
    origin: np.ndarray,
    down: np.ndarray,
    right: np.ndarray,
    shape: tuple[int, int],
    order: int,
    cval: float,
) -> np.ndarray:
    """Sample ``vol`` on a world plane: pixel (r, c) at origin + r*down + c*right (mm)."""
    inv = np.linalg.inv(affine)
    r = np.arange(shape[0])[:, None, None]
    c = np.arange(shape[1])[None, :, None]
    world = origin + r * down + c * right
    ijk = world @ inv[:3, :3].T + inv[:3, 3]
    return ndimage.map_coordinates(vol, np.moveaxis(ijk, -1, 0), order=order, cval=cval)


def _centroid(mask: np.ndarray) -> np.ndarray | None:
    """Mean voxel index (i, j, k) of a mask's voxels, from its projections (no index list);
    None when empty."""
    m = np.asarray(mask, dtype=bool).view(np.uint8)
    ij = m.sum(axis=2, dtype=np.int64)
    n = int(ij.sum())
    if n == 0:
        return None
    k = m.sum(axis=(0, 1), dtype=np.int64)
    profiles = (ij.sum(axis=1), ij.sum(axis=0), k)
    return np.array([float(np.arange(len(p)) @ p) / n for p in profiles])


def _mask_slices(
    mask: np.ndarray, hu: np.ndarray, affine: np.ndarray, mm: float = 1.0
) -> list[np.ndarray]:
    """Sagittal and axial RGB slices (float 0..255) through the mask's centre, mask in red.

    Sagittal: anterior on the left, superior up. Axial: anterior up, subject's right on the left.
    """
    affine = np.asarray(affine, dtype=np.float64)
    corners = np.stack(np.meshgrid(*[[0, n - 1] for n in hu.shape])).reshape(3, -1).T
    world = corners @ affine[:3, :3].T + affine[:3, 3]
    lo, hi = world.min(0), world.max(0)
    centre = _centroid(mask)
    c = centre @ affine[:3, :3].T + affine[:3, 3] if centre is not None else (lo + hi) / 2
    n = np.ceil((hi - lo) / mm).astype(int) + 1
    planes = [  # (origin, down, right, shape)
        (np.array([c[0], hi[1], hi[2]]), [0, 0, -mm], [0, -mm, 0], (n[2], n[1])),
        (np.array([hi[0], hi[1], c[2]]), [0, -mm, 0], [-mm, 0, 0], (n[1], n[0])),
    ]
    out = []
    vol_m = np.asarray(mask, dtype=bool).view(np.uint8)  # nearest samples: no float copy
    for origin, down, right, shape in planes:
        d, r = np.array(down, float), np.array(right, float)
        gray = _slice(np.asarray(hu, np.float32), affine, origin, d, r, shape, 1, OUTSIDE_HU)
        m = _slice(vol_m, affine, origin, d, r, shape, 0, 0.0) > 0
        g = np.clip((gray + 1000.0) / 2000.0, 0, 1) * 255.0
        rgb = np.repeat(g[..., None], 3, axis=2)
        rgb[m] = 0.5 * rgb[m] + 0.5 * np.array([255.0, 0.0, 0.0])
        body = (gray > BODY_HU) | m
        if body.any():  # crop to the body (and mask), 10 mm margin
            rows, cols = np.flatnonzero(body.any(1)), np.flatnonzero(body.any(0))
            k = round(10.0 / mm)
            rgb = rgb[
                max(0, rows[0] - k) : rows[-1] + 1 + k, max(0, cols[0] - k) : cols[-1] + 1 + k
            ]
        out.append(rgb)
    return out


def figure_png(
    before: Sequence[Render],
    after: Sequence[Render],
    mask: np.ndarray,
    hu: np.ndarray,
    affine: np.ndarray,
    *,
    threshold_hu: float = -300.0,
    tile: int = 192,
    caption: str = "",
) -> bytes:
    """A PNG: the renders at ``threshold_hu`` before (top row) and after (middle row), yaw from
    -60 to +60 degrees left to right, and the mask (red) on a sagittal and an axial slice of
    ``hu`` through its centre (bottom row), under a line of ``caption`` (the verdict) if given.

    Args:
        before, after: renders of :func:`render_skin` (``after`` may be empty).
        mask: bool mask, same shape and axes as ``hu``.
        hu: image in HU (usually the original), axes (i, j, k); affine: voxel -> RAS+ mm.
    """
    rows: list[list[np.ndarray]] = []
    for renders in (before, after):
        sel = sorted(
            (r for r in renders if r.threshold_hu == threshold_hu), key=lambda r: r.yaw_deg
        )
        if not sel:  # fall back to whatever threshold is there
            sel = sorted(renders, key=lambda r: (r.threshold_hu, r.yaw_deg))[:5]
        if sel:
            rows.append([np.repeat(_fit(r.image, tile)[..., None], 3, axis=2) for r in sel])
    rows.append([_fit(s, tile) for s in _mask_slices(np.asarray(mask, bool), hu, affine)])
    width = max(len(r) for r in rows) * tile
    canvas = np.zeros((len(rows) * tile, width, 3), np.uint8)
    for i, row in enumerate(rows):
        for j, t in enumerate(row):
            canvas[i * tile : (i + 1) * tile, j * tile : (j + 1) * tile] = np.clip(t, 0, 255)
    if caption:
        canvas = np.concatenate([text_strip(caption, width), canvas])
    return png_bytes(canvas)


def text_strip(text: str, width: int, height: int = CAPTION_PX) -> np.ndarray:
    """``text`` in white on black, left-aligned, as a uint8 RGB strip (Pillow's built-in
    font; cut off at ``width``)."""
    from PIL import Image, ImageDraw, ImageFont

    strip = Image.new("RGB", (width, height))
    ImageDraw.Draw(strip).text((6, 4), text, fill=(255, 255, 255), font=ImageFont.load_default())
    return np.asarray(strip, dtype=np.uint8)


def thumbnail_jpeg(figure: bytes, width: int = THUMBNAIL_PX) -> bytes:
    """A JPEG of ``figure`` (an image file Pillow reads, usually :func:`figure_png`'s) scaled to
    ``width`` pixels wide, never enlarged.

    Raises:
        ValueError: ``figure`` is not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(figure)) as im:
            im.load()
            rgb = im.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"not a readable image ({e})") from e
    if rgb.width > width:
        height = max(1, round(rgb.height * width / rgb.width))
        rgb = rgb.resize((width, height), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=THUMBNAIL_QUALITY, optimize=True)
    return out.getvalue()


def png_bytes(image: np.ndarray) -> bytes:
    """Encode a uint8 gray (H, W) or RGB (H, W, 3) image as PNG (zlib, no dependencies)."""
    img = np.ascontiguousarray(image, dtype=np.uint8)
    if img.ndim == 2:
        color = 0
    elif img.ndim == 3 and img.shape[2] == 3:
        color = 2
    else:
        raise ValueError(f"png_bytes: expected (H, W) or (H, W, 3), got {img.shape}")
    h, w = img.shape[:2]
    raw = np.concatenate([np.zeros((h, 1), np.uint8), img.reshape(h, -1)], axis=1).tobytes()

    def chunk(tag: bytes, data: bytes) -> bytes:
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )
