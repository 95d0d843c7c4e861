"""Tests of ctadeface.verify.detect: MTCNN and dlib's HOG and CNN detectors on renders."""

from __future__ import annotations

import numpy as np
import pytest

from ctadeface.verify import detect, render
from tests import VHP_HEAD


def test_every_detector_reports_per_render(checked: tuple, detector: detect.FaceDetector) -> None:
    _, before, after = checked
    faces = detector.detect(before, cnn=False)
    assert len(faces) == len(before) and all(f.cnn is None for f in faces)
    assert max(f.mtcnn_p for f in faces) > 0.9  # the phantom's face
    for f in faces:
        assert (f.box is None) == (f.mtcnn_box is None and f.hog == 0)
        assert f.dlib == f.hog
    with_cnn = detector.detect(after[:2], cnn=True)
    assert all(f.cnn is not None and f.dlib == max(f.hog, f.cnn) for f in with_cnn)


def test_cnn_workers_find_what_the_cnn_finds_in_process(checked: tuple) -> None:
    """dlib's CNN in two worker processes gives what it gives here; when the workers die the
    detector says so and goes on in this process."""
    import multiprocessing

    _, before, after = checked
    here = detect.FaceDetector(cnn_workers=1)
    others = set(multiprocessing.active_children())
    pooled = detect.FaceDetector(cnn_workers=2)
    try:
        assert here.cnn_workers == 0 and pooled.cnn_workers == 2
        expected = here.detect_pair(before, after)
        assert pooled.detect_pair(before, after) == expected
        assert all(f.cnn is None for f in expected[0])
        assert all(f.cnn is not None for f in expected[1])
        for child in set(multiprocessing.active_children()) - others:
            child.kill()
        assert pooled.detect_pair(before, after) == expected
        assert pooled.cnn_workers == 0
    finally:
        pooled.close()


def test_an_empty_render_has_no_face(detector: detect.FaceDetector) -> None:
    blank = np.zeros((200, 320), np.uint8)
    assert detector.mtcnn(blank) == (0.0, None)
    assert detector.hog(blank) == [] and detector.cnn(blank) == []


def test_dlib_models_come_from_face_recognition_models() -> None:
    path = detect.dlib_model("mmod_human_face_detector.dat")
    assert path.is_file() and path.parent.name == "models"


@pytest.mark.skipif(not VHP_HEAD.is_file(), reason="../shared/data is absent")
def test_real_head_face_is_found_by_every_detector(detector: detect.FaceDetector) -> None:
    from ctadeface.io import load_ct

    ct = load_ct(VHP_HEAD)
    renders = render.render_skin(ct.hu(), ct.affine, thresholds=(-300.0,), yaws=(0.0,))
    (faces,) = detector.detect(renders, cnn=True)
    assert faces.mtcnn_p >= 0.99 and faces.hog >= 1 and (faces.cnn or 0) >= 1
