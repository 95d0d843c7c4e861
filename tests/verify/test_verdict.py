"""Tests of ctadeface.verify.verdict: identity first, then detection; statuses and modes; bad
input gives one line, never a crash."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ctadeface.errors import InputError
from ctadeface.records import from_json, to_json
from ctadeface.status import Status
from ctadeface.verify import identify, verdict
from ctadeface.verify.identify import IdentityResult


def _identity(p: float) -> IdentityResult:
    return IdentityResult(views_tested=10, rank1_views=3, chance=0.01, p=p, gallery_heads=99)


@pytest.mark.parametrize(
    ("p", "mtcnn", "dlib", "expected"),
    [
        (0.001, 0.0, 0, Status.IDENTIFIABLE),  # identity first, whatever the detectors say
        (0.5, 0.6, 0, Status.FACE_LIKE),
        (0.5, 0.1, 2, Status.FACE_LIKE),
        (0.5, 0.1, 0, Status.DEFACED),
    ],
)
def test_status_identity_first_then_detection(p, mtcnn, dlib, expected) -> None:
    assert verdict.status_of(_identity(p), mtcnn, dlib, threshold=0.5) == expected


def test_the_phantom_without_its_face_is_not_identified(checked: tuple) -> None:
    result, before, after = checked
    assert result.face_p_before > 0.9 and result.face_p_after < result.face_p_before
    assert result.identity.views_tested > 0 and not result.identity.identified
    assert result.identity_before.views_tested > 0  # the control could be run
    assert result.status in (Status.DEFACED, Status.FACE_LIKE) and result.mask_mode == "face"
    assert len(result.per_render) == len(before) == 15
    assert max(s.p_after for s in result.per_render) == result.face_p_after
    yaws = {s.yaw_deg for s in result.per_render if s.rank1_after is not None}
    assert len(yaws) == result.identity.views_tested
    for b, a in zip(before, after, strict=True):  # same cameras and crops
        assert (b.frame, b.crop, b.image.shape) == (a.frame, a.crop, a.image.shape)


def test_an_image_against_itself_is_identifiable(phantom, verifier: verdict.Verifier) -> None:
    """An empty mask: nothing was removed, and the test says so."""
    hu = phantom.hu()
    result, _, _ = verifier.verify(hu, hu.copy(), phantom.affine)
    assert result.status == Status.IDENTIFIABLE and result.identity.identified
    assert result.identity.rank1_views == result.identity.views_tested > 0
    assert not result.meets_mask_definition


def test_strict_mode_makes_a_face_like_render_a_failure(checked: tuple) -> None:
    result, _, _ = checked
    strict = verdict.Verification(**{**result.__dict__, "mask_mode": "strict"})
    face_like = strict.face_p_after >= verdict.STRICT_P or strict.dlib_faces_after > 0
    assert strict.meets_mask_definition == (not face_like and not strict.identity.identified)
    assert result.meets_mask_definition == (not result.identity.identified)


def test_the_verdict_goes_to_json_and_back(checked: tuple) -> None:
    result, _, _ = checked
    js = to_json(result)
    assert {"Status", "MaskMode", "Identity", "IdentityBefore", "DlibFacesAfter"} <= set(js)
    assert {"ViewsTested", "Rank1Views", "Chance", "P", "GalleryHeads"} <= set(js["Identity"])
    assert js["FaceNetSimilarity"] is None and "not available" in js["FaceNetNote"]
    assert js["NRenders"] == 15 and "MeetsMaskDefinition" in js
    assert from_json(verdict.Verification, json.loads(json.dumps(js))) == result


def test_facenet_weights_are_loaded_from_disk(
    checked: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random weights in the place facenet-pytorch caches them: loaded, nothing downloaded."""
    import torch
    from facenet_pytorch import InceptionResnetV1

    torch.manual_seed(0)
    ckpt = tmp_path / "torch" / "checkpoints" / identify.FACENET_FILE
    ckpt.parent.mkdir(parents=True)
    torch.save(InceptionResnetV1(pretrained=None, classify=False).state_dict(), ckpt)
    monkeypatch.delenv(identify.FACENET_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert identify.facenet_weights_path() == ckpt
    net = identify.FaceNet()
    assert net.available and net.status == f"available: {ckpt}"
    _, before, after = checked
    boxes = [(40.0, 40.0, 200.0, 200.0)] * 2
    same = net.similarity(before[:2], before[:2], boxes)
    assert same is not None and same == pytest.approx(1.0, abs=1e-4)
    other = net.similarity(before[:2], after[:2], boxes)
    assert other is not None and -1.0 <= other < same


def test_different_grids_are_one_input_error(verifier: verdict.Verifier) -> None:
    with pytest.raises(InputError, match="differ"):
        verifier.verify(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), np.eye(4))


def test_a_scan_without_a_head_gets_a_verdict(verifier: verdict.Verifier) -> None:
    air = np.full((40, 40, 40), -1000.0, np.float32)
    result, _, _ = verifier.verify(air, air.copy(), np.diag([3.0, 3.0, 3.0, 1.0]))
    assert result.identity.views_tested == 0 and result.identity.p == 1.0
    assert result.status == Status.DEFACED and result.face_p_before == 0.0
