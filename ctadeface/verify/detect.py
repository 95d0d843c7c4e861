"""Face detection on skin renders: MTCNN's face probability and box, dlib's HOG and CNN (MMOD)
detectors.

Nothing is ever downloaded: MTCNN's weights ship inside facenet-pytorch, dlib's detector and
recognition models inside face-recognition-models (found with ``importlib``: that package's
own ``__init__`` needs ``pkg_resources``, which new setuptools no longer have).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ctadeface.errors import UsageError
from ctadeface.verify.render import THRESHOLDS_HU, YAWS_DEG, Render

log = logging.getLogger(__name__)

#: MTCNN's last-stage threshold: any detection has at least this probability.
DETECTION_P = 0.7
#: Smallest face MTCNN looks for, pixels of a render (a face is ~100+ px at RENDER_PX).
MIN_FACE_PX = 40

#: A face box in pixels of a render: (x0, y0, x1, y1).
Box = tuple[float, float, float, float]
#: Renders per image: more CNN workers than this would idle.
N_RENDERS = len(THRESHOLDS_HU) * len(YAWS_DEG)
#: File of dlib's CNN (MMOD) face detector in face-recognition-models.
CNN_MODEL = "mmod_human_face_detector.dat"


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
    the networks takes a moment.

    dlib's CNN is the slowest detector (about 0.4 s a render on one core) and holds Python's
    lock while it runs, so with ``cnn_workers`` > 1 it runs in that many worker processes
    (started here, each loading the model once) while MTCNN and HOG run in this one; the
    results are the same as in-process. ``cnn_workers`` None: one per CPU this process may use
    (at most one per render); 1: in this process.
    """

    def __init__(
        self,
        *,
        device: str = "cpu",
        min_face_px: int = MIN_FACE_PX,
        cnn_workers: int | None = None,
    ) -> None:
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
        self._cnn_path = str(dlib_model(CNN_MODEL))
        self._cnn = _cnn_model(self._cnn_path)
        workers = min(available_cpus() if cnn_workers is None else cnn_workers, N_RENDERS)
        self._workers = workers if workers > 1 else 0
        self._pool: Executor | None = None
        if self._workers:
            try:
                self._pool = ProcessPoolExecutor(
                    max_workers=workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_cnn_model,
                    initargs=(self._cnn_path,),
                )
                for _ in range(workers):  # start the workers now, while other stages run
                    self._pool.submit(_warm_up, self._cnn_path)
            except (OSError, ImportError) as e:  # no semaphores or processes here
                log.warning("no worker processes for dlib's CNN (%s); it runs in this one", e)
                self._pool = None

    @property
    def cnn_workers(self) -> int:
        """Processes dlib's CNN runs in besides this one (0: in this process)."""
        return 0 if self._pool is None else self._workers

    def close(self) -> None:
        """Stop the CNN's worker processes (they also stop when this process ends)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

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
        return _cnn_boxes(self._cnn, image)

    def detect(self, renders: Sequence[Render], *, cnn: bool = True) -> list[Faces]:
        """What each detector finds on each render (dlib's CNN only when ``cnn``)."""
        return self.detect_pair([], renders, cnn=cnn)[1]

    def detect_pair(
        self, first: Sequence[Render], second: Sequence[Render], *, cnn: bool = True
    ) -> tuple[list[Faces], list[Faces]]:
        """What the detectors find on two sets of renders: MTCNN and HOG on both, dlib's CNN
        only on ``second`` (when ``cnn``). The CNN's workers run while MTCNN and HOG run here."""
        pending = self._submit_cnn([r.image for r in second]) if cnn else None
        threads = self._torch.get_num_threads()
        if pending is not None:  # leave the cores to the workers (idle torch threads spin)
            self._torch.set_num_threads(1)
        try:
            found = [
                [(*self.mtcnn(r.image), self.hog(r.image)) for r in rs] for rs in (first, second)
            ]
        finally:
            self._torch.set_num_threads(threads)
        cnn_boxes = self._gather_cnn(pending, [r.image for r in second]) if cnn else None
        return (
            [_faces(*row, None) for row in found[0]],
            [
                _faces(*row, None if cnn_boxes is None else cnn_boxes[i])
                for i, row in enumerate(found[1])
            ],
        )

    def _submit_cnn(self, images: Sequence[np.ndarray]) -> list[Future[list[Box]]] | None:
        """The CNN on each picture, started in the workers (None: no workers)."""
        if self._pool is None:
            return None
        try:
            return [self._pool.submit(_cnn_in_worker, self._cnn_path, im) for im in images]
        except BrokenProcessPool as e:
            self._lost_workers(e)
            return None

    def _gather_cnn(
        self, pending: list[Future[list[Box]]] | None, images: Sequence[np.ndarray]
    ) -> list[list[Box]]:
        """The workers' CNN results, or the CNN run here (no workers, or they stopped)."""
        if pending is not None:
            try:
                return [f.result() for f in pending]
            except BrokenProcessPool as e:
                self._lost_workers(e)
        return [self.cnn(im) for im in images]

    def _lost_workers(self, error: BrokenProcessPool) -> None:
        """Go on in this process when a worker died (e.g. killed for memory)."""
        log.warning("dlib CNN workers stopped (%s); running the CNN in this process", error)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = None

    def face_probabilities(self, renders: Sequence[Render]) -> list[float]:
        """MTCNN's face probability of each render (0 when no face is found)."""
        return [self.mtcnn(r.image)[0] for r in renders]


def _faces(p: float, mbox: Box | None, hog: list[Box], cnn: list[Box] | None) -> Faces:
    box = hog[0] if hog else (cnn[0] if cnn else mbox)
    return Faces(p, mbox, len(hog), None if cnn is None else len(cnn), box)


def available_cpus() -> int:
    """CPUs this process may run on (its affinity where the system tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@functools.cache
def _cnn_model(path: str) -> Any:
    """dlib's CNN detector loaded from ``path``, once per process (each worker keeps its own)."""
    return import_dlib().cnn_face_detection_model_v1(path)


def _warm_up(path: str) -> None:
    """A first task for a worker: it starts the process, whose initializer loads the model."""
    _cnn_model(path)


def _cnn_boxes(model: Any, image: np.ndarray) -> list[Box]:
    return [_box(d.rect) for d in model(np.ascontiguousarray(image), 0)]


def _cnn_in_worker(path: str, image: np.ndarray) -> list[Box]:
    return _cnn_boxes(_cnn_model(path), image)


def _box(rect: Any) -> Box:
    return float(rect.left()), float(rect.top()), float(rect.right()), float(rect.bottom())
