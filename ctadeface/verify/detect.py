"""Face detection and identity on skin renders: MTCNN's face probability and box, and FaceNet
(VGGFace2) embeddings when their weights are on disk.

Nothing is ever downloaded: MTCNN's weights ship inside facenet-pytorch; FaceNet's are looked up
on disk (:func:`facenet_weights_path`) and skipped, with a note saying why, when absent.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ctadeface.errors import UsageError
from ctadeface.verify.render import Render

log = logging.getLogger(__name__)

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
