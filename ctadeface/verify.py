"""Check a defaced CT the way ``docs/mask-definition.md`` judges a mask: look for a face.

The skin of the original and of the defaced image is rendered as isosurfaces (default -500, -300
and -100 HU) seen from the front of the subject and at yaw +-30 and +-60 degrees (15 pictures per
image), MTCNN looks for a face in every picture, and, when the FaceNet (VGGFace2) weights are on
disk, the identity embeddings of original and defaced pictures are compared.

Geometry: ``hu`` arrays are in the voxel order found on disk (axes i, j, k) and ``affine`` maps
voxel indices to world RAS+ millimetres (x to the subject's right, y anterior, z superior). The
renderer samples the volume on an isotropic grid aligned with each camera (trilinear, after a
block average when voxels are much finer than the grid), so any voxel order and anisotropic
spacing give the same pictures. A camera at yaw 0 looks from anterior (+y) towards posterior;
positive yaw turns it towards the subject's left. Pictures are upright (superior at the top) and
show the subject as seen by the camera (at yaw 0 the subject's right is on the picture's left).

Run on any pair of NIfTI files on the same grid (e.g. defaced by another tool)::

    python -m ctadeface.verify ORIGINAL DEFACED [--png OUT.png] [--face-threshold 0.5]

prints one JSON object and exits 1 when a face is still found in the defaced image, 0 otherwise
(64/65 for a bad argument or unusable input).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import struct
import sys
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from .errors import ArgumentParser, CTADefaceError, InputError, UsageError

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
#: Value outside the image, HU (air).
AIR_HU = -1024.0
#: MTCNN's last-stage threshold: any detection has at least this probability.
DETECTION_P = 0.7
#: Smallest face MTCNN looks for, pixels of a render (a face is ~100+ px at RENDER_PX).
MIN_FACE_PX = 40
#: FaceNet (InceptionResnetV1, VGGFace2) weights: file name facenet-pytorch caches, and the
#: environment variable that may name the file. They are never downloaded.
FACENET_FILE = "20180402-114759-vggface2.pt"
FACENET_ENV = "CTADEFACE_FACENET_WEIGHTS"
#: Face-crop size of FaceNet, pixels.
FACENET_PX = 160

_LIGHT = np.array([-0.35, 0.45, 1.0]) / np.linalg.norm([-0.35, 0.45, 1.0])  # screen x, y, z
_AMBIENT = 0.12


# ---------------------------------------------------------------------------------------------
# Renders


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
    hu: np.ndarray, affine: np.ndarray, voxel_mm: float
) -> tuple[np.ndarray, np.ndarray]:
    """Average blocks of voxels that are much finer than ``voxel_mm``; return (array, affine)."""
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    f = [max(1, int(voxel_mm / s + 0.25)) for s in spacing]
    if f == [1, 1, 1]:
        return np.asarray(hu, dtype=np.float32), affine
    n = [hu.shape[a] // f[a] * f[a] for a in range(3)]
    a = np.asarray(hu[: n[0], : n[1], : n[2]], dtype=np.float32)
    a = a.reshape(n[0] // f[0], f[0], n[1] // f[1], f[1], n[2] // f[2], f[2]).mean(
        axis=(1, 3, 5), dtype=np.float32
    )
    scale = np.eye(4)
    scale[:3, :3] = np.diag(f)
    scale[:3, 3] = [(x - 1) / 2 for x in f]
    return a, affine @ scale


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
        vol, step, offset=o_ijk, output_shape=(nd, nr, nc), order=1, cval=AIR_HU, prefilter=False
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
    Returns:
        ``len(thresholds) * len(yaws)`` renders, each cropped to what the camera hit.
    """
    affine = np.asarray(affine, dtype=np.float64)
    crops: dict[tuple[float, float], tuple[int, int, int, int]] = {}
    if like:
        frame = like[0].frame
        crops = {(r.threshold_hu, r.yaw_deg): r.crop for r in like}
    else:
        frame = view_frame(hu, affine, threshold_hu=min(thresholds), voxel_mm=voxel_mm)
    vol, vol_affine = _block_mean(hu, affine, frame.voxel_mm)
    if SMOOTH_MM > 0:
        sp = np.linalg.norm(vol_affine[:3, :3], axis=0)
        vol = ndimage.gaussian_filter(
            vol, [SMOOTH_MM / s for s in sp], mode="nearest", truncate=2.5
        )
    out: dict[tuple[float, float], Render] = {}
    for yaw in yaws:
        samples = _sample_view(vol, vol_affine, frame, float(yaw))
        for thr in thresholds:
            depth, hit = _depth(samples, float(thr), frame.voxel_mm)
            crop = crops.get((float(thr), float(yaw))) or _crop_box(hit)
            image = _picture(depth, hit, crop, frame.voxel_mm, px)
            out[(thr, yaw)] = Render(float(thr), float(yaw), image, frame, crop)
    return [out[(t, y)] for t in thresholds for y in yaws]


# ---------------------------------------------------------------------------------------------
# Face detection and identity


@dataclass(frozen=True)
class Detection:
    """MTCNN's most probable face in a render: probability (0 when none) and box
    (x0, y0, x1, y1 in pixels of the render) or None."""

    prob: float
    box: tuple[float, float, float, float] | None


def facenet_weights_path() -> Path | None:
    """The FaceNet VGGFace2 state dict on disk, or None: ``$CTADEFACE_FACENET_WEIGHTS``, then
    facenet-pytorch's cache (``$TORCH_HOME`` or ``$XDG_CACHE_HOME/torch`` or ``~/.cache/torch``,
    ``checkpoints/20180402-114759-vggface2.pt``)."""
    for p in _facenet_candidates():
        if p.is_file():
            return p
    return None


def _facenet_candidates() -> list[Path]:
    out = []
    if os.environ.get(FACENET_ENV):
        out.append(Path(os.environ[FACENET_ENV]).expanduser())
    homes = [os.environ.get("TORCH_HOME")]
    homes.append(os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch"))
    homes.append("~/.cache/torch")
    for h in homes:
        if h:
            p = Path(h).expanduser() / "checkpoints" / FACENET_FILE
            if p not in out:
                out.append(p)
    return out


class FaceDetector:
    """MTCNN face detection and (when its weights are on disk) FaceNet identity embeddings.

    Create once per process and reuse: loading the networks takes a moment. Nothing is ever
    downloaded: MTCNN's weights ship inside facenet-pytorch; FaceNet's are looked up with
    :func:`facenet_weights_path` (or ``facenet_weights``) and skipped when absent.
    """

    def __init__(
        self,
        *,
        facenet_weights: Path | None = None,
        device: str = "cpu",
        min_face_px: int = MIN_FACE_PX,
    ) -> None:
        try:
            import torch
            from facenet_pytorch import MTCNN, InceptionResnetV1
        except ImportError as e:  # pragma: no cover - depends on the installation
            raise UsageError(
                f"face verification needs facenet-pytorch (pip install --no-deps "
                f"-r requirements/verify.txt): {e}"
            ) from e
        self._torch = torch
        self._device = device
        self._mtcnn = MTCNN(keep_all=True, device=device, min_face_size=min_face_px)
        self._facenet: Any = None
        path = Path(facenet_weights) if facenet_weights else facenet_weights_path()
        if path is None or not path.is_file():
            where = path or " or ".join(str(p) for p in _facenet_candidates())
            self._facenet_status = f"not available: FaceNet weights not found at {where}"
            return
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = {k: v for k, v in state.items() if not k.startswith("logits.")}
            net = InceptionResnetV1(pretrained=None, classify=False)
            net.load_state_dict(state)
        except Exception as e:  # a corrupt or foreign file: verification goes on without it
            self._facenet_status = f"not available: cannot load FaceNet weights {path} ({e})"
            log.warning("%s", self._facenet_status)
            return
        self._facenet = net.eval().to(device)
        self._facenet_status = f"available: {path}"

    @property
    def facenet_status(self) -> str:
        """'available: PATH' or 'not available: WHY'."""
        return self._facenet_status

    @property
    def facenet_available(self) -> bool:
        return self._facenet is not None

    def detect(self, renders: Sequence[Render]) -> list[Detection]:
        """The most probable face of each render (probability 0 and no box when none)."""
        out = []
        with self._torch.no_grad():
            for r in renders:
                rgb = np.repeat(r.image[:, :, None], 3, axis=2)
                boxes, probs = self._mtcnn.detect(rgb)
                if boxes is None or probs is None or len(probs) == 0:
                    out.append(Detection(0.0, None))
                    continue
                best = int(np.nanargmax(probs))
                box = tuple(float(x) for x in boxes[best])
                out.append(Detection(float(probs[best]), box))  # type: ignore[arg-type]
        return out

    def face_probabilities(self, renders: Sequence[Render]) -> list[float]:
        """MTCNN's face probability of each render (0 when no face is found)."""
        return [d.prob for d in self.detect(renders)]

    def similarity(
        self,
        renders_a: Sequence[Render],
        renders_b: Sequence[Render],
        detections_a: Sequence[Detection] | None = None,
    ) -> float | None:
        """Mean cosine similarity of FaceNet embeddings of paired renders.

        Only pairs whose first render shows a face count; both pictures are cropped by that
        face's box. None when FaceNet is not available or no render of ``renders_a`` shows a face.
        """
        if self._facenet is None:
            return None
        if len(renders_a) != len(renders_b):
            raise ValueError("similarity: render lists differ in length")
        dets = list(detections_a) if detections_a is not None else self.detect(renders_a)
        crops_a, crops_b = [], []
        for ra, rb, d in zip(renders_a, renders_b, dets, strict=True):
            if d.box is None or ra.image.shape != rb.image.shape:
                continue
            crops_a.append(_face_crop(ra.image, d.box))
            crops_b.append(_face_crop(rb.image, d.box))
        if not crops_a:
            return None
        torch = self._torch
        with torch.no_grad():
            xa = torch.from_numpy(np.stack(crops_a)).to(self._device)
            xb = torch.from_numpy(np.stack(crops_b)).to(self._device)
            ea, eb = self._facenet(xa), self._facenet(xb)
            cos = torch.nn.functional.cosine_similarity(ea, eb, dim=1)
        return float(cos.mean())


def _face_crop(image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """A (3, 160, 160) float32 FaceNet input: the box (x0, y0, x1, y1) of a gray picture,
    resized and standardised like facenet-pytorch ((v - 127.5) / 128)."""
    x0, y0, x1, y1 = box
    h, w = image.shape
    c0, c1 = max(0, math.floor(x0)), min(w, math.ceil(x1))
    r0, r1 = max(0, math.floor(y0)), min(h, math.ceil(y1))
    patch = image[r0:r1, c0:c1].astype(np.float32)
    if patch.size == 0:
        patch = np.zeros((1, 1), np.float32)
    z = (FACENET_PX / patch.shape[0], FACENET_PX / patch.shape[1])
    patch = ndimage.zoom(patch, z, order=1, mode="nearest", grid_mode=True)[
        :FACENET_PX, :FACENET_PX
    ]
    patch = np.pad(patch, ((0, FACENET_PX - patch.shape[0]), (0, FACENET_PX - patch.shape[1])))
    return np.repeat(((patch - 127.5) / 128.0)[None], 3, axis=0).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Verification


@dataclass(frozen=True)
class RenderScore:
    """Face probabilities of one view before and after defacing."""

    threshold_hu: float
    yaw_deg: float
    p_before: float
    p_after: float


@dataclass(frozen=True)
class Verification:
    """Outcome of looking for a face before and after defacing.

    Attributes:
        face_p_before, face_p_after: highest MTCNN face probability over all renders.
        detections_before, detections_after: renders with any detection (p >= 0.7).
        facenet_similarity: mean cosine similarity of FaceNet embeddings of original and defaced
            renders where the original shows a face; None when not computed.
        facenet_note: why it is None, or where the weights came from.
        status: "face-detected" when ``face_p_after >= face_threshold``, else "defaced".
        face_threshold: the threshold used.
        per_render: one score per view, thresholds outer, yaws inner.
    """

    face_p_before: float
    face_p_after: float
    detections_before: int
    detections_after: int
    facenet_similarity: float | None
    facenet_note: str
    status: str
    face_threshold: float
    per_render: tuple[RenderScore, ...]

    @property
    def meets_mask_definition(self) -> bool:
        """The criterion of docs/mask-definition.md: no render reaches p 0.9 after defacing and
        at most 2 renders give any detection."""
        return self.face_p_after < 0.9 and self.detections_after <= 2

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (probabilities rounded to 4 decimals)."""
        sim = self.facenet_similarity
        return {
            "status": self.status,
            "face_p_before": round(self.face_p_before, 4),
            "face_p_after": round(self.face_p_after, 4),
            "facenet_similarity": None if sim is None else round(sim, 4),
            "facenet_note": self.facenet_note,
            "detections_before": self.detections_before,
            "detections_after": self.detections_after,
            "n_renders": len(self.per_render),
            "face_threshold": self.face_threshold,
            "meets_mask_definition": self.meets_mask_definition,
            "per_render": [
                {
                    "threshold_hu": s.threshold_hu,
                    "yaw_deg": s.yaw_deg,
                    "p_before": round(s.p_before, 4),
                    "p_after": round(s.p_after, 4),
                }
                for s in self.per_render
            ],
        }


def verify(
    original_hu: np.ndarray,
    defaced_hu: np.ndarray,
    affine: np.ndarray,
    detector: FaceDetector,
    *,
    face_threshold: float = 0.5,
) -> tuple[Verification, list[Render], list[Render]]:
    """Render original and defaced skin with the same cameras and look for faces in both.

    Args:
        original_hu, defaced_hu: the two images in HU, same shape, axes (i, j, k) as on disk.
        affine: their 4x4 voxel -> world RAS+ mm.
        detector: the process's :class:`FaceDetector`.
        face_threshold: status is "face-detected" when a defaced render reaches it.
    Returns:
        (verification, original renders, defaced renders).
    Raises:
        InputError: the two images differ in shape.
    """
    if original_hu.shape != defaced_hu.shape:
        raise InputError(
            f"original shape {original_hu.shape} and defaced shape {defaced_hu.shape} differ"
        )
    before = render_skin(original_hu, affine)
    after = render_skin(defaced_hu, affine, like=before)
    det_b, det_a = detector.detect(before), detector.detect(after)
    sim = detector.similarity(before, after, det_b)
    if detector.facenet_available:
        note = detector.facenet_status if sim is not None else "no face in the original renders"
    else:
        note = detector.facenet_status
    p_b = max(d.prob for d in det_b)
    p_a = max(d.prob for d in det_a)
    scores = tuple(
        RenderScore(r.threshold_hu, r.yaw_deg, b.prob, a.prob)
        for r, b, a in zip(before, det_b, det_a, strict=True)
    )
    result = Verification(
        face_p_before=p_b,
        face_p_after=p_a,
        detections_before=sum(d.prob >= DETECTION_P for d in det_b),
        detections_after=sum(d.prob >= DETECTION_P for d in det_a),
        facenet_similarity=sim,
        facenet_note=note,
        status="face-detected" if p_a >= face_threshold else "defaced",
        face_threshold=float(face_threshold),
        per_render=scores,
    )
    log.info(
        "face p before %.3f, after %.3f (%d/%d renders with a face): %s",
        p_b,
        p_a,
        result.detections_after,
        len(after),
        result.status,
    )
    return result, before, after


def checker(
    face_threshold: float = 0.5, detector: FaceDetector | None = None
) -> Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[dict[str, Any], bytes]]:
    """The participant loop's verifier: ``check(original_hu, defaced_hu, mask, affine)`` returns
    the verdict (:meth:`Verification.to_json`) and the figure PNG. Loads the detector once."""
    found = detector or FaceDetector()

    def check(
        original_hu: np.ndarray, defaced_hu: np.ndarray, mask: np.ndarray, affine: np.ndarray
    ) -> tuple[dict[str, Any], bytes]:
        result, before, after = verify(
            original_hu, defaced_hu, affine, found, face_threshold=face_threshold
        )
        return result.to_json(), figure_png(before, after, mask, original_hu, affine)

    return check


# ---------------------------------------------------------------------------------------------
# Figure


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
    ijk = np.argwhere(mask)
    c = ijk.mean(0) @ affine[:3, :3].T + affine[:3, 3] if len(ijk) else (lo + hi) / 2
    n = np.ceil((hi - lo) / mm).astype(int) + 1
    planes = [  # (origin, down, right, shape)
        (np.array([c[0], hi[1], hi[2]]), [0, 0, -mm], [0, -mm, 0], (n[2], n[1])),
        (np.array([hi[0], hi[1], c[2]]), [0, -mm, 0], [-mm, 0, 0], (n[1], n[0])),
    ]
    out = []
    vol_m = np.asarray(mask, dtype=np.float32)
    for origin, down, right, shape in planes:
        d, r = np.array(down, float), np.array(right, float)
        gray = _slice(np.asarray(hu, np.float32), affine, origin, d, r, shape, 1, AIR_HU)
        m = _slice(vol_m, affine, origin, d, r, shape, 0, 0.0) > 0.5
        g = np.clip((gray + 1000.0) / 2000.0, 0, 1) * 255.0
        rgb = np.repeat(g[..., None], 3, axis=2)
        rgb[m] = 0.5 * rgb[m] + 0.5 * np.array([255.0, 0.0, 0.0])
        body = (gray > -500.0) | m
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
) -> bytes:
    """A PNG: the renders at ``threshold_hu`` before (top row) and after (middle row), yaw from
    -60 to +60 degrees left to right, and the mask (red) on a sagittal and an axial slice of
    ``hu`` through its centre (bottom row).

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
    return png_bytes(canvas)


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


# ---------------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m ctadeface.verify",
        description="Look for a face in skin renders of a CT before and after defacing. Prints "
        "one JSON object; exits 1 when a face is still found after defacing, 0 otherwise.",
    )
    p.add_argument("original", type=Path, help="original CT (NIfTI)")
    p.add_argument("defaced", type=Path, help="defaced CT on the same grid (NIfTI)")
    p.add_argument("--png", type=Path, help="write a figure of renders and changed voxels here")
    p.add_argument("--face-threshold", type=float, default=0.5, help="default: 0.5")
    return p


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Verify two NIfTI files; return the JSON object (raises CTADefaceError on bad input)."""
    from .io import load_ct

    args = _parser().parse_args(argv)
    if not 0.0 <= args.face_threshold <= 1.0:
        raise UsageError(f"--face-threshold must lie in [0, 1], got {args.face_threshold}")
    a, b = load_ct(args.original), load_ct(args.defaced)
    if a.data.shape != b.data.shape:
        raise InputError(
            f"{args.defaced}: grid {b.data.shape} differs from the original's {a.data.shape}"
        )
    if not np.allclose(a.affine, b.affine, atol=1e-3):
        raise InputError(f"{args.defaced}: affine differs from the original's (not the same grid)")
    hu_a, hu_b = a.hu(), b.hu()
    detector = FaceDetector()
    result, before, after = verify(
        hu_a, hu_b, a.affine, detector, face_threshold=args.face_threshold
    )
    out = {"original": str(args.original), "defaced": str(args.defaced), **result.to_json()}
    if args.png:
        changed = hu_a != hu_b
        try:
            args.png.write_bytes(figure_png(before, after, changed, hu_a, a.affine))
        except OSError as e:
            from .errors import OutputError

            raise OutputError(f"{args.png}: cannot write the figure ({e.strerror or e})") from e
        out["png"] = str(args.png)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: print one JSON object; 1 = face still found, 0 = none, 64/65 = bad
    usage or input (one line on stderr)."""
    try:
        out = run(argv)
    except CTADefaceError as e:
        sys.stderr.write(f"ctadeface.verify: {e}\n")
        return e.exit_code
    sys.stdout.write(json.dumps(out) + "\n")
    return 1 if out["status"] == "face-detected" else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
