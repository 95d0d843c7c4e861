"""Tests of ctadeface.verify.verdict: the verdict before and after defacing."""

from __future__ import annotations

import numpy as np
import pytest

from ctadeface.errors import InputError
from ctadeface.verify import detect, verdict


def test_face_mask_lowers_face_probability(checked: tuple) -> None:
    result, before, after = checked
    assert result.face_p_before > 0.9  # the phantom's face is found (reliably, all seeds tried)
    assert result.face_p_after < result.face_p_before
    assert result.detections_after < result.detections_before
    assert result.status == ("face-detected" if result.face_p_after >= 0.5 else "defaced")
    assert [s.p_before for s in result.per_render] and len(result.per_render) == len(before)
    assert max(s.p_after for s in result.per_render) == result.face_p_after
    for b, a in zip(before, after, strict=True):  # same cameras and crops
        assert (b.frame, b.crop, b.image.shape) == (a.frame, a.crop, a.image.shape)


def test_verify_refuses_different_shapes(detector: detect.FaceDetector) -> None:
    with pytest.raises(InputError, match="differ"):
        verdict.verify(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), np.eye(4), detector)
