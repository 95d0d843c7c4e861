"""Face detection on skin renders: MTCNN's face probability and box, dlib's HOG and CNN (MMOD)
detectors.

Nothing is ever downloaded: MTCNN's weights ship inside facenet-pytorch, dlib's detector and
recognition models inside face-recognition-models (found with ``importlib``: that package's
own ``__init__`` needs ``pkg_resources``, which new setuptools no longer have).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ctadeface.errors import UsageError
from ctadeface.verify.render import Render

log = logging.getLogger(__name__)

#: MTCNN's last-stage threshold: any detection has at least this probability.
DETECTION_P = 0.7
#: Smallest face MTCNN looks for, pixels of a render (a face is ~100+ px at RENDER_PX).
MIN_FACE_PX = 40

#: A face box in pixels of a render: (x0, y0, x1, y1).
Box = tuple[float, float, float, float]


def dlib_model(name: str) -> Path:
    """The path of one of dlib's model files shipped in face-recognition-models (e.g.
    ``mmod_human_face_detector.dat``). Raises UsageError when the package is not installed."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(
            "face verification needs face-recognition-models "
            "(pip install --no-deps -r requirements/verify.txt)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise UsageError(f"face-recognition-models lacks {path}; reinstall it")
    return path


def import_dlib() -> Any:
    """The dlib module, or UsageError naming what to install."""
    try:
        import dlib
    except ImportError as e:  # pragma: no cover - depends on the installation
        raise UsageError(
            "face verification needs dlib-bin "
            f"(pip install --no-deps -r requirements/verify.txt): {e}"
        ) from e
    return dlib


@dataclass(frozen=True)
class Faces:
    """What the detectors find on one render.

    Attributes:
        mtcnn_p: MTCNN's highest face probability (0 when none).
        mtcnn_box: that face's box, or None.
        hog: faces found by dlib's HOG detector.
        cnn: faces found by dlib's CNN detector (None: not run on this render).
        box: the face box identity is measured at: dlib HOG's first face, else dlib CNN's,
            else MTCNN's; None when no detector found a face.
    """

    mtcnn_p: float
    mtcnn_box: Box | None
    hog: int
    cnn: int | None
    box: Box | None

    @property
    def dlib(self) -> int:
        """Faces found by either dlib detector (the larger count)."""
        return max(self.hog, self.cnn or 0)


class FaceDetector:
    """MTCNN and dlib's HOG and CNN face detectors. Create once per process and reuse: loading
    the networks takes a moment."""

    def __init__(self, *, device: str = "cpu", min_face_px: int = MIN_FACE_PX) -> None:
        try:
            import torch
            from facenet_pytorch import MTCNN
        except ImportError as e:  # pragma: no cover - depends on the installation
            raise UsageError(
                f"face verification needs facenet-pytorch (pip install --no-deps "
                f"-r requirements/verify.txt): {e}"
            ) from e
        dlib = import_dlib()
        self._torch = torch
        self._mtcnn = MTCNN(keep_all=True, device=device, min_face_size=min_face_px)
        self._hog = dlib.get_frontal_face_detector()
        self._cnn = dlib.cnn_face_detection_model_v1(
            str(dlib_model("mmod_human_face_detector.dat"))
        )

    def mtcnn(self, image: np.ndarray) -> tuple[float, Box | None]:
        """MTCNN's most probable face of a gray picture: (probability, box); (0, None)."""
        rgb = np.repeat(image[:, :, None], 3, axis=2)
        with self._torch.no_grad():
            boxes, probs = self._mtcnn.detect(rgb)
        if boxes is None or probs is None or len(probs) == 0:
            return 0.0, None
        best = int(np.nanargmax(probs))
        x0, y0, x1, y1 = (float(v) for v in boxes[best])
        return float(probs[best]), (x0, y0, x1, y1)

    def hog(self, image: np.ndarray) -> list[Box]:
        """dlib's HOG detector on a gray picture (one upsampling: faces from ~40 px)."""
        return [_box(r) for r in self._hog(image, 1)]

    def cnn(self, image: np.ndarray) -> list[Box]:
        """dlib's CNN (MMOD) detector on a gray picture at its own size (its 80 px window holds
        a face of a 320 px render; at half size it misses frontal faces of the 1 mm heads)."""
        return [_box(d.rect) for d in self._cnn(np.ascontiguousarray(image), 0)]

    def detect(self, renders: Sequence[Render], *, cnn: bool = True) -> list[Faces]:
        """What each detector finds on each render (dlib's CNN only when ``cnn``)."""
        out = []
        for r in renders:
            p, mbox = self.mtcnn(r.image)
            hog = self.hog(r.image)
            cnn_boxes = self.cnn(r.image) if cnn else None
            box = hog[0] if hog else (cnn_boxes[0] if cnn_boxes else mbox)
            out.append(Faces(p, mbox, len(hog), None if cnn_boxes is None else len(cnn_boxes), box))
        return out

    def face_probabilities(self, renders: Sequence[Render]) -> list[float]:
        """MTCNN's face probability of each render (0 when no face is found)."""
        return [self.mtcnn(r.image)[0] for r in renders]


def _box(rect: Any) -> Box:
    return float(rect.left()), float(rect.top()), float(rect.right()), float(rect.bottom())
