"""The verdict on one defaced scan: can the person still be recognised, and does a detector
still see a face?

The skin of the original and of the defaced image is rendered with the same cameras
(:mod:`ctadeface.verify.render`); MTCNN and dlib's HOG and CNN detectors look for faces
(:mod:`ctadeface.verify.detect`); dlib's face-recognition network describes each view and the
identity test ranks the defaced render against its own original and a gallery of other heads
(:mod:`ctadeface.verify.identify`). The status, in order:

- ``identifiable``: the defaced renders pick out their own original more often than chance;
- ``face-like``: not identifiable, but MTCNN reaches ``face_threshold`` or dlib finds a face on
  a defaced render (expected in ``face`` mask mode, where the facial skeleton stays; a failure
  in ``strict`` mode);
- ``defaced``: neither.

A control runs beside: the original's renders at one isosurface level against its own renders
at the next level (and the gallery there), which shows that the test can recognise this person
at all. Probabilities are recorded to 4 decimals.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from ctadeface.errors import InputError
from ctadeface.settings import MASK_MODES
from ctadeface.status import Status
from ctadeface.verify.detect import DETECTION_P, FaceDetector, Faces, available_cpus
from ctadeface.verify.figure import figure_png
from ctadeface.verify.identify import (
    Describer,
    FaceNet,
    Gallery,
    IdentityResult,
    View,
    identity_test,
    rank_views,
)
from ctadeface.verify.render import THRESHOLDS_HU, Patch, Render, render_skin

log = logging.getLogger(__name__)

#: Digits the recorded probabilities and similarities keep.
DIGITS = 4
#: In strict mode no defaced render may reach this MTCNN probability (docs/mask-definition.md).
STRICT_P = 0.5


@dataclass(frozen=True)
class RenderScore:
    """One view before and after defacing (threshold HU, yaw degrees): MTCNN's probability,
    dlib's face count, and whether the defaced render ranks its own original first (None: not
    tested at this view)."""

    threshold_hu: float
    yaw_deg: float
    p_before: float
    p_after: float
    dlib_before: int
    dlib_after: int
    rank1_after: bool | None


@dataclass(frozen=True)
class Verification:
    """Outcome of looking for a face and an identity before and after defacing.

    Attributes:
        status: ``identifiable``, ``face-like`` or ``defaced`` (see the module docstring).
        mask_mode: ``face`` or ``strict``.
        identity: the defaced renders against their own originals and the gallery.
        identity_before: the control: the originals at one level against the next.
        face_p_before, face_p_after: highest MTCNN face probability over all renders.
        detections_before, detections_after: renders where MTCNN finds a face (p >= 0.7).
        dlib_faces_before, dlib_faces_after: renders where dlib finds a face (HOG before;
            HOG or CNN after).
        facenet_similarity: mean cosine similarity of FaceNet embeddings of original and defaced
            renders at the original's face boxes; None when not computed.
        facenet_note: why it is None, or where the weights came from.
        face_threshold: MTCNN probability that makes a defaced render face-like.
        per_render: one score per view, thresholds outer, yaws inner.
    """

    #: Properties recorded beside the fields.
    DERIVED: ClassVar[tuple[str, ...]] = ("n_renders", "meets_mask_definition")

    status: Status
    mask_mode: str
    identity: IdentityResult
    identity_before: IdentityResult
    face_p_before: float
    face_p_after: float
    detections_before: int
    detections_after: int
    dlib_faces_before: int
    dlib_faces_after: int
    facenet_similarity: float | None
    facenet_note: str
    face_threshold: float
    per_render: tuple[RenderScore, ...]

    @property
    def n_renders(self) -> int:
        """How many views were rendered (before and after each)."""
        return len(self.per_render)

    @property
    def meets_mask_definition(self) -> bool:
        """docs/mask-definition.md, "How to judge a mask": identity not above chance; in strict
        mode also no defaced render at MTCNN p 0.5 and no dlib face."""
        if self.identity.identified:
            return False
        return self.mask_mode == "face" or (
            self.face_p_after < STRICT_P and self.dlib_faces_after == 0
        )


def status_of(
    identity: IdentityResult, face_p_after: float, dlib_after: int, threshold: float
) -> Status:
    """identifiable, face-like or defaced (see the module docstring)."""
    if identity.identified:
        return Status.IDENTIFIABLE
    if face_p_after >= threshold or dlib_after > 0:
        return Status.FACE_LIKE
    return Status.DEFACED


def _next_level(view: View) -> View:
    """The same yaw at the next isosurface level (cyclically): the control's enrolled view."""
    levels = list(THRESHOLDS_HU)
    i = levels.index(view[0]) if view[0] in levels else -1
    return levels[(i + 1) % len(levels)], view[1]


class Verifier:
    """Everything verification needs, loaded once per run: the detectors, the describer, the
    gallery and FaceNet (when its weights exist).

    ``face_threshold``: MTCNN probability that makes a defaced render face-like; ``mask_mode``:
    the mask mode the scans were defaced with (it decides what face-like means for the run);
    ``workers``: CPUs to use (None: all this process may use): render threads and processes
    for dlib's CNN detector (``FaceDetector``).
    """

    def __init__(
        self,
        face_threshold: float = 0.5,
        mask_mode: str = "face",
        *,
        detector: FaceDetector | None = None,
        describer: Describer | None = None,
        gallery: Gallery | None = None,
        facenet: FaceNet | None = None,
        workers: int | None = None,
    ) -> None:
        if mask_mode not in MASK_MODES:
            raise ValueError(f"mask mode {mask_mode!r}: use one of {', '.join(MASK_MODES)}")
        self.face_threshold = float(face_threshold)
        self.mask_mode = mask_mode
        self.workers = available_cpus() if workers is None else max(1, workers)
        self.detector = detector or FaceDetector(cnn_workers=self.workers)
        self.describer = describer or Describer()
        self.gallery = gallery or Gallery.load()
        self.facenet = facenet or FaceNet()

    def verify(
        self, original_hu: np.ndarray, defaced: np.ndarray | Patch, affine: np.ndarray
    ) -> tuple[Verification, list[Render], list[Render]]:
        """Render original and defaced skin with the same cameras, detect and identify.

        Args:
            original_hu: the original in HU, axes (i, j, k) as on disk.
            defaced: the defaced image in HU (same shape), or what changed (``Patch``).
            affine: their 4x4 voxel -> world RAS+ mm.
        Returns:
            (verification, original renders, defaced renders).
        Raises:
            InputError: the two images differ in shape (or the patch does not fit).
        """
        if isinstance(defaced, np.ndarray):
            if original_hu.shape != defaced.shape:
                raise InputError(
                    f"original shape {original_hu.shape} and defaced shape {defaced.shape} differ"
                )
            defaced = Patch.whole(defaced)
        if not defaced.fits(original_hu.shape):
            raise InputError(f"the defaced patch does not fit an image of {original_hu.shape}")
        before = render_skin(original_hu, affine, threads=self.workers)
        after = render_skin(original_hu, affine, like=before, patch=defaced, threads=self.workers)
        faces_b, faces_a = self.detector.detect_pair(before, after)
        result = self.judge(before, after, faces_b, faces_a)
        identity = result.identity
        log.info(
            "identity: rank 1 on %d of %d yaws (chance %.3f, p %.3g); MTCNN p before %.3f, "
            "after %.3f; dlib faces after %d: %s",
            identity.rank1_views,
            identity.views_tested,
            identity.chance,
            identity.p,
            result.face_p_before,
            result.face_p_after,
            result.dlib_faces_after,
            result.status,
        )
        return result, before, after

    def judge(
        self,
        before: list[Render],
        after: list[Render],
        faces_b: list[Faces],
        faces_a: list[Faces],
    ) -> Verification:
        """The verdict from renders and what the detectors found on them."""
        boxes = [
            fb.box if fb.box is not None else fa.box
            for fb, fa in zip(faces_b, faces_a, strict=True)
        ]
        enrolled = self.describer.describe_all(before, [f.box for f in faces_b])
        probes = self.describer.describe_all(after, boxes)
        gallery = self.gallery.without(enrolled)
        ranks = rank_views(probes, enrolled, gallery)  # per render, for the record
        identity = identity_test(probes, enrolled, gallery)
        control = identity_test(
            enrolled, enrolled, gallery, enrolled_view={v: _next_level(v) for v in enrolled}
        )
        p_b = max(f.mtcnn_p for f in faces_b)
        p_a = max(f.mtcnn_p for f in faces_a)
        dlib_after = sum(f.dlib > 0 for f in faces_a)
        sim = self.facenet.similarity(before, after, boxes)
        if not self.facenet.available:
            note = self.facenet.status
        else:
            note = self.facenet.status if sim is not None else "no face in the original renders"
        scores = tuple(
            RenderScore(
                r.threshold_hu,
                r.yaw_deg,
                round(fb.mtcnn_p, DIGITS),
                round(fa.mtcnn_p, DIGITS),
                fb.dlib,
                fa.dlib,
                ranks[(r.threshold_hu, r.yaw_deg)][0]
                if (r.threshold_hu, r.yaw_deg) in ranks
                else None,
            )
            for r, fb, fa in zip(before, faces_b, faces_a, strict=True)
        )
        return Verification(
            status=status_of(identity, p_a, dlib_after, self.face_threshold),
            mask_mode=self.mask_mode,
            identity=_rounded(identity),
            identity_before=_rounded(control),
            face_p_before=round(p_b, DIGITS),
            face_p_after=round(p_a, DIGITS),
            detections_before=sum(f.mtcnn_p >= DETECTION_P for f in faces_b),
            detections_after=sum(f.mtcnn_p >= DETECTION_P for f in faces_a),
            dlib_faces_before=sum(f.dlib > 0 for f in faces_b),
            dlib_faces_after=dlib_after,
            facenet_similarity=None if sim is None else round(sim, DIGITS),
            facenet_note=note,
            face_threshold=self.face_threshold,
            per_render=scores,
        )

    def __call__(
        self,
        original_hu: np.ndarray,
        defaced: np.ndarray | Patch,
        mask: np.ndarray,
        affine: np.ndarray,
        /,
    ) -> tuple[Verification, bytes]:
        """The participant loop's verifier: the verdict and the QC figure (PNG)."""
        result, before, after = self.verify(original_hu, defaced, affine)
        return result, figure_png(before, after, mask, original_hu, affine, caption=caption(result))


def caption(result: Verification) -> str:
    """One line for the figure: mode, status, identity, detectors."""
    identity = result.identity
    return (
        f"{result.mask_mode} mask: {result.status}; identity rank 1 on {identity.rank1_views}/"
        f"{identity.views_tested} yaws (chance {identity.chance:.3f}, p {identity.p:.2g}); "
        f"MTCNN p {result.face_p_before:.2f} -> {result.face_p_after:.2f}; dlib faces "
        f"{result.dlib_faces_before} -> {result.dlib_faces_after} of {result.n_renders}"
    )


def _rounded(result: IdentityResult) -> IdentityResult:
    return replace(result, chance=round(result.chance, 6), p=float(f"{result.p:.4g}"))
