"""Skin renders: shaded pictures of a CT's skin isosurfaces from several camera yaws.

The skin of an image is rendered as isosurfaces (default -500, -300 and -100 HU) seen from the
front of the subject and at yaw +-30 and +-60 degrees (15 pictures per image).

Geometry: ``hu`` arrays are in the voxel order found on disk (axes i, j, k) and ``affine`` maps
voxel indices to world RAS+ millimetres (x to the subject's right, y anterior, z superior). The
renderer samples the volume on an isotropic grid aligned with each camera (trilinear, after a
block average when voxels are much finer than the grid), so any voxel order and anisotropic
spacing give the same pictures. A camera at yaw 0 looks from anterior (+y) towards posterior;
positive yaw turns it towards the subject's left. Pictures are upright (superior at the top) and
show the subject as seen by the camera (at yaw 0 the subject's right is on the picture's left).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ctadeface.hu import OUTSIDE_HU

log = logging.getLogger(__name__)

#: Isosurface levels of the skin renders, HU.
THRESHOLDS_HU: tuple[float, ...] = (-500.0, -300.0, -100.0)
#: Camera yaws, degrees (0 = from the front; positive = towards the subject's left).
YAWS_DEG: tuple[float, ...] = (0.0, -30.0, 30.0, -60.0, 60.0)
#: Grid spacing of the renders, mm.
VOXEL_MM = 2.0
#: Longer side of a render, pixels (MTCNN finds faces well at this size).
RENDER_PX = 320
#: Gaussian smoothing (sigma, mm) before the isosurface: softens staircases and noise.
SMOOTH_MM = 1.0

_LIGHT = np.array([-0.35, 0.45, 1.0]) / np.linalg.norm([-0.35, 0.45, 1.0])  # screen x, y, z
_AMBIENT = 0.12


@dataclass(frozen=True)
class ViewFrame:
    """Where the cameras look: shared by all renders of an image (and its defaced copy).

    Attributes:
        center_mm: world RAS+ point (mm) the cameras turn around (centre of the body's box).
        radius_mm: half width and half depth of each camera's grid, mm (covers the body's box
            at any yaw).
        z_range_mm: (bottom, top) world z of the grid, mm.
        voxel_mm: grid spacing, mm.
    """

    center_mm: tuple[float, float, float]
    radius_mm: float
    z_range_mm: tuple[float, float]
    voxel_mm: float

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        """(depth, rows, columns) of a camera's sampling grid."""
        n = math.ceil(2 * self.radius_mm / self.voxel_mm) + 1
        rows = math.ceil((self.z_range_mm[1] - self.z_range_mm[0]) / self.voxel_mm) + 1
        return n, rows, n


@dataclass(frozen=True)
class Render:
    """One shaded skin picture.

    Attributes:
        threshold_hu: isosurface level, HU.
        yaw_deg: camera yaw, degrees (0 = front, positive towards the subject's left).
        image: uint8 gray picture (rows, columns), 0 where no skin was hit.
        frame: the camera geometry it was rendered with.
        crop: (row0, row1, col0, col1) of the camera grid that the picture shows (upscaled).
    """

    threshold_hu: float
    yaw_deg: float
    image: np.ndarray
    frame: ViewFrame
    crop: tuple[int, int, int, int]


@dataclass(frozen=True)
class Patch:
    """A defaced image given as what changed in its original: its HU inside a box of voxels;
    outside the box the two images are equal. Spares a full copy of the volume in HU.

    Attributes:
        box: slices along the original's axes (i, j, k).
        hu: float32 HU of the defaced image inside ``box`` (the box's shape).
    """

    box: tuple[slice, slice, slice]
    hu: np.ndarray

    @classmethod
    def whole(cls, defaced_hu: np.ndarray) -> Patch:
        """A whole defaced image as a patch that covers everything."""
        a, b, c = (slice(0, n) for n in defaced_hu.shape)
        return cls((a, b, c), np.asarray(defaced_hu, dtype=np.float32))

    def fits(self, shape: tuple[int, ...]) -> bool:
        """Whether the box lies inside an image of ``shape`` and ``hu`` has the box's shape."""
        if len(shape) != 3 or len(self.box) != 3:
            return False
        for s, n in zip(self.box, shape, strict=True):
            if s.step not in (None, 1) or not 0 <= s.start <= s.stop <= n:
                return False
        return self.hu.shape == tuple(s.stop - s.start for s in self.box)

    def applied(self, original_hu: np.ndarray) -> np.ndarray:
        """The whole defaced image in HU (float32): a copy of ``original_hu`` with the patch."""
        out = np.array(original_hu, dtype=np.float32)
        out[self.box] = self.hu
        return out


def view_frame(
    hu: np.ndarray,
    affine: np.ndarray,
    *,
    threshold_hu: float = min(THRESHOLDS_HU),
    voxel_mm: float = VOXEL_MM,
) -> ViewFrame:
    """The camera geometry for an image: the world box of voxels above ``threshold_hu``.

    Args:
        hu: image in HU, axes (i, j, k) as on disk.
        affine: 4x4 voxel -> world RAS+ mm.
        threshold_hu: the lowest isosurface level that will be rendered, HU.
        voxel_mm: grid spacing of the renders, mm.
    """
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    step = tuple(max(1, round(4.0 / s)) for s in spacing)
    coarse = hu[:: step[0], :: step[1], :: step[2]]
    ijk = np.argwhere(coarse > threshold_hu) * np.array(step)
    if len(ijk) == 0:  # nothing to see: look at the whole field of view
        ijk = np.array([[0, 0, 0], [n - 1 for n in hu.shape]])
        log.debug("no voxel above %s HU; rendering the whole field of view", threshold_hu)
    lo, hi = ijk.min(0), ijk.max(0) + np.array(step) - 1
    corners = np.stack(np.meshgrid(*zip(lo, hi, strict=True))).reshape(3, -1).T
    world = corners @ affine[:3, :3].T + affine[:3, 3]
    wlo, whi = world.min(0), world.max(0)
    center = (wlo + whi) / 2
    radius = 0.5 * float(np.hypot(whi[0] - wlo[0], whi[1] - wlo[1])) + 2 * voxel_mm
    return ViewFrame(
        center_mm=(float(center[0]), float(center[1]), float(center[2])),
        radius_mm=radius,
        z_range_mm=(float(wlo[2]) - voxel_mm, float(whi[2]) + voxel_mm),
        voxel_mm=float(voxel_mm),
    )


def _block_mean(
    hu: np.ndarray, affine: np.ndarray, voxel_mm: float, patch: Patch | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Average blocks of voxels that are much finer than ``voxel_mm``; return (array, affine).

    With a ``patch``, of the patched image: the blocks the patch touches are averaged again
    from a copy of just those voxels, so no patched copy of the whole volume is made."""
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    f = [max(1, int(voxel_mm / s + 0.25)) for s in spacing]
    if f == [1, 1, 1]:
        whole = np.asarray(hu, dtype=np.float32) if patch is None else patch.applied(hu)
        return whole, affine
    n = [hu.shape[a] // f[a] * f[a] for a in range(3)]
    a = _blocks(np.asarray(hu[: n[0], : n[1], : n[2]], dtype=np.float32), f)
    if patch is not None:
        lo = [min(s.start // b * b, m) for s, b, m in zip(patch.box, f, n, strict=True)]
        hi = [min(-(-s.stop // b) * b, m) for s, b, m in zip(patch.box, f, n, strict=True)]
        if all(h > low for low, h in zip(lo, hi, strict=True)):
            region = tuple(slice(low, h) for low, h in zip(lo, hi, strict=True))
            sub = np.array(hu[region], dtype=np.float32)
            # the patch's part inside the region, in the patch's and the region's indices
            src = tuple(
                slice(max(low, s.start) - s.start, min(h, s.stop) - s.start)
                for s, low, h in zip(patch.box, lo, hi, strict=True)
            )
            dst = tuple(
                slice(max(low, s.start) - low, min(h, s.stop) - low)
                for s, low, h in zip(patch.box, lo, hi, strict=True)
            )
            sub[dst] = patch.hu[src]
            a[tuple(slice(low // b, h // b) for low, h, b in zip(lo, hi, f, strict=True))] = (
                _blocks(sub, f)
            )
    scale = np.eye(4)
    scale[:3, :3] = np.diag(f)
    scale[:3, 3] = [(x - 1) / 2 for x in f]
    return a, affine @ scale


def _blocks(a: np.ndarray, f: Sequence[int]) -> np.ndarray:
    """Means of the ``f``-sized blocks of ``a`` (its shape a multiple of ``f``), float32.

    Summed one axis at a time (k, j, then i), each as whole-array additions of its ``f`` strided
    slices: the same additions in the same order whatever ``a``'s memory layout and whatever
    else is averaged with a block, so a patch's blocks equal the whole image's bit for bit."""
    for axis in (2, 1, 0):
        if f[axis] > 1:
            lead = (slice(None),) * axis
            total = a[(*lead, slice(0, None, f[axis]))].astype(np.float32, copy=True)
            for r in range(1, f[axis]):
                total += a[(*lead, slice(r, None, f[axis]))]
            a = total
    return np.asarray(a, dtype=np.float32) / np.float32(math.prod(f))


def _camera_axes(yaw_deg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World unit vectors (to camera, screen right, screen up) of a camera at ``yaw_deg``."""
    t = math.radians(yaw_deg)
    to_cam = np.array([-math.sin(t), math.cos(t), 0.0])
    right = np.array([-math.cos(t), -math.sin(t), 0.0])
    return to_cam, right, np.array([0.0, 0.0, 1.0])


def _sample_view(
    vol: np.ndarray, affine: np.ndarray, frame: ViewFrame, yaw_deg: float
) -> np.ndarray:
    """Trilinear samples of ``vol`` on a camera's grid, shape (depth, rows, columns).

    Depth index 0 is nearest the camera; row 0 is the top (superior); column 0 the screen left.
    """
    nd, nr, nc = frame.grid_shape
    v, r0 = frame.voxel_mm, frame.radius_mm
    to_cam, right, up = _camera_axes(yaw_deg)
    inv = np.linalg.inv(affine)
    m, o = inv[:3, :3], inv[:3, 3]
    origin = np.array(frame.center_mm)
    origin = np.array([origin[0], origin[1], frame.z_range_mm[1]]) + r0 * to_cam - r0 * right
    o_ijk = m @ origin + o  # voxel index of grid point (0, 0, 0)
    # columns: voxel-index steps of one grid step in depth, row and column
    step = np.stack([m @ (-v * to_cam), m @ (-v * up), m @ (v * right)], axis=1)
    return ndimage.affine_transform(
        vol,
        step,
        offset=o_ijk,
        output_shape=(nd, nr, nc),
        order=1,
        cval=OUTSIDE_HU,
        prefilter=False,
    )


def _depth(
    samples: np.ndarray, threshold_hu: float, voxel_mm: float
) -> tuple[np.ndarray, np.ndarray]:
    """Distance (mm) from the camera plane to the first crossing of ``threshold_hu`` along each
    ray (linear between samples), and the mask of rays that hit anything."""
    inside = samples > threshold_hu
    first = inside.argmax(axis=0)
    hit = np.take_along_axis(inside, first[None], 0)[0]
    v1 = np.take_along_axis(samples, first[None], 0)[0]
    v0 = np.take_along_axis(samples, np.maximum(first - 1, 0)[None], 0)[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where((first > 0) & (v1 > v0), (threshold_hu - v0) / (v1 - v0), 1.0)
    depth = (first - 1 + np.clip(frac, 0.0, 1.0)) * voxel_mm
    far = float(depth[hit].max()) if hit.any() else 0.0
    return np.where(hit, depth, far).astype(np.float32), hit


def _crop_box(hit: np.ndarray, margin: int = 3) -> tuple[int, int, int, int]:
    """Rows and columns of ``hit`` around everything hit (whole picture when nothing is)."""
    if not hit.any():
        return 0, hit.shape[0], 0, hit.shape[1]
    rows, cols = np.flatnonzero(hit.any(1)), np.flatnonzero(hit.any(0))
    return (
        max(0, int(rows[0]) - margin),
        min(hit.shape[0], int(rows[-1]) + 1 + margin),
        max(0, int(cols[0]) - margin),
        min(hit.shape[1], int(cols[-1]) + 1 + margin),
    )


def _shade(depth: np.ndarray, hit: np.ndarray, px_mm: float) -> np.ndarray:
    """Lambertian gray picture (uint8) of a depth map (mm, rows x columns of ``px_mm``)."""
    smooth = ndimage.gaussian_filter(depth, 0.8)
    d_row, d_col = np.gradient(smooth, px_mm)
    # surface height towards the camera is -depth; screen y runs up (against rows)
    n = np.stack([d_col, -d_row, np.ones_like(depth)])
    n /= np.linalg.norm(n, axis=0)
    lambert = np.clip(np.tensordot(_LIGHT, n, axes=1), 0.0, 1.0)
    near, far = (float(depth[hit].min()), float(depth[hit].max())) if hit.any() else (0.0, 1.0)
    fog = 1.0 - 0.35 * (depth - near) / max(far - near, 1e-6)
    gray = (_AMBIENT + (1 - _AMBIENT) * lambert) * fog
    return np.where(hit, np.clip(gray * 255.0, 0, 255), 0).astype(np.uint8)


def _picture(
    depth: np.ndarray, hit: np.ndarray, crop: tuple[int, int, int, int], voxel_mm: float, px: int
) -> np.ndarray:
    """Crop a depth map, upscale it so that its longer side is ``px`` pixels, and shade it."""
    r0, r1, c0, c1 = crop
    d, h = depth[r0:r1, c0:c1], hit[r0:r1, c0:c1]
    zoom = px / max(d.shape)
    d_up = ndimage.zoom(d, zoom, order=1, mode="nearest", grid_mode=True)
    h_up = ndimage.zoom(h.astype(np.float32), zoom, order=1, mode="nearest", grid_mode=True) > 0.5
    return _shade(d_up, h_up, voxel_mm / zoom)


def render_skin(
    hu: np.ndarray,
    affine: np.ndarray,
    *,
    thresholds: Sequence[float] = THRESHOLDS_HU,
    yaws: Sequence[float] = YAWS_DEG,
    voxel_mm: float = VOXEL_MM,
    px: int = RENDER_PX,
    like: Sequence[Render] | None = None,
    patch: Patch | None = None,
    threads: int = 1,
) -> list[Render]:
    """Shaded pictures of the skin isosurfaces, thresholds outer, yaws inner.

    Args:
        hu: image in HU, shape (ni, nj, nk) in the voxel order on disk.
        affine: 4x4 voxel (i, j, k) -> world RAS+ mm.
        thresholds: isosurface levels, HU.
        yaws: camera yaws, degrees (0 = from the front, positive towards the subject's left).
        voxel_mm: isotropic sampling grid, mm.
        px: longer side of each picture, pixels.
        like: renders of another image on the same grid (e.g. the original of a defaced image):
            reuse their camera frame and crops (matched by threshold and yaw) so that pictures
            can be compared pixel by pixel. ``voxel_mm`` is then taken from them.
        patch: render ``hu`` with this patch applied (a defaced image given as its original
            ``hu`` and what changed), without a patched copy of the volume.
        threads: yaws rendered at once (SciPy's resampling runs outside Python's lock).
    Returns:
        ``len(thresholds) * len(yaws)`` renders, each cropped to what the camera hit.
    """
    affine = np.asarray(affine, dtype=np.float64)
    crops: dict[tuple[float, float], tuple[int, int, int, int]] = {}
    if like:
        frame = like[0].frame
        crops = {(r.threshold_hu, r.yaw_deg): r.crop for r in like}
    else:
        whole = hu if patch is None else patch.applied(hu)
        frame = view_frame(whole, affine, threshold_hu=min(thresholds), voxel_mm=voxel_mm)
        del whole
    vol, vol_affine = _block_mean(hu, affine, frame.voxel_mm, patch)
    if SMOOTH_MM > 0:
        sp = np.linalg.norm(vol_affine[:3, :3], axis=0)
        vol = ndimage.gaussian_filter(
            vol, [SMOOTH_MM / s for s in sp], mode="nearest", truncate=2.5
        )

    def one_yaw(yaw: float) -> list[Render]:
        samples = _sample_view(vol, vol_affine, frame, float(yaw))
        renders = []
        for thr in thresholds:
            depth, hit = _depth(samples, float(thr), frame.voxel_mm)
            crop = crops.get((float(thr), float(yaw))) or _crop_box(hit)
            image = _picture(depth, hit, crop, frame.voxel_mm, px)
            renders.append(Render(float(thr), float(yaw), image, frame, crop))
        return renders

    with ThreadPoolExecutor(max(1, min(threads, len(yaws)))) as pool:
        by_yaw = list(pool.map(one_yaw, yaws))
    return [by_yaw[j][i] for i in range(len(thresholds)) for j in range(len(yaws))]
