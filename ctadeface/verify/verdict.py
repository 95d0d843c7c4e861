"""The verdict on one defaced scan: look for a face on skin renders before and after.

The skin of the original and of the defaced image is rendered with the same cameras
(:mod:`ctadeface.verify.render`), MTCNN looks for a face in every picture and FaceNet compares
identities where its weights are on disk (:mod:`ctadeface.verify.detect`). The scan's status is
``face-detected`` when a defaced render reaches the face threshold. Probabilities are recorded to
4 decimals.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ctadeface.errors import InputError
from ctadeface.status import Status
from ctadeface.verify.detect import DETECTION_P, FaceDetector
from ctadeface.verify.figure import figure_png
from ctadeface.verify.render import Render, render_skin

log = logging.getLogger(__name__)

#: Digits the recorded probabilities and similarities keep.
DIGITS = 4


@dataclass(frozen=True)
class RenderScore:
    """Face probabilities of one view before and after defacing (threshold HU, yaw degrees)."""

    threshold_hu: float
    yaw_deg: float
    p_before: float
    p_after: float


@dataclass(frozen=True)
class Verification:
    """Outcome of looking for a face before and after defacing.

    Attributes:
        status: ``face-detected`` when ``face_p_after >= face_threshold``, else ``defaced``.
        face_p_before, face_p_after: highest MTCNN face probability over all renders.
        facenet_similarity: mean cosine similarity of FaceNet embeddings of original and defaced
            renders where the original shows a face; None when not computed.
        facenet_note: why it is None, or where the weights came from.
        detections_before, detections_after: renders with any detection (p >= 0.7).
        face_threshold: the threshold used.
        per_render: one score per view, thresholds outer, yaws inner.
    """

    #: Properties recorded beside the fields.
    DERIVED: ClassVar[tuple[str, ...]] = ("n_renders", "meets_mask_definition")

    status: Status
    face_p_before: float
    face_p_after: float
    facenet_similarity: float | None
    facenet_note: str
    detections_before: int
    detections_after: int
    face_threshold: float
    per_render: tuple[RenderScore, ...]

    @property
    def n_renders(self) -> int:
        """How many views were rendered (before and after each)."""
        return len(self.per_render)

    @property
    def meets_mask_definition(self) -> bool:
        """No render reaches p 0.9 after defacing and at most 2 renders give any detection."""
        return self.face_p_after < 0.9 and self.detections_after <= 2


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
        face_threshold: status is ``face-detected`` when a defaced render reaches it.
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
        RenderScore(r.threshold_hu, r.yaw_deg, round(b.prob, DIGITS), round(a.prob, DIGITS))
        for r, b, a in zip(before, det_b, det_a, strict=True)
    )
    result = Verification(
        status=Status.FACE_DETECTED if p_a >= face_threshold else Status.DEFACED,
        face_p_before=round(p_b, DIGITS),
        face_p_after=round(p_a, DIGITS),
        facenet_similarity=None if sim is None else round(sim, DIGITS),
        facenet_note=note,
        detections_before=sum(d.prob >= DETECTION_P for d in det_b),
        detections_after=sum(d.prob >= DETECTION_P for d in det_a),
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


#: The participant loop's verifier: (original HU, defaced HU, mask, affine) -> verdict, PNG.
Checker = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[Verification, bytes]]


def checker(face_threshold: float = 0.5, detector: FaceDetector | None = None) -> Checker:
    """The participant loop's verifier: ``check(original_hu, defaced_hu, mask, affine)`` returns
    the verdict and the figure PNG. Loads the detector once."""
    found = detector or FaceDetector()

    def check(
        original_hu: np.ndarray, defaced_hu: np.ndarray, mask: np.ndarray, affine: np.ndarray
    ) -> tuple[Verification, bytes]:
        result, before, after = verify(
            original_hu, defaced_hu, affine, found, face_threshold=face_threshold
        )
        return result, figure_png(before, after, mask, original_hu, affine)

    return check
