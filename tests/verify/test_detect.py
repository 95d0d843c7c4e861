"""Tests of ctadeface.verify.detect: MTCNN faces, and FaceNet identity with its weights read
from disk only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ctadeface.provenance import from_json, to_json
from ctadeface.verify import detect, render, verdict
from tests import VHP_HEAD


def test_facenet_absent_gives_none(checked: tuple, detector: detect.FaceDetector) -> None:
    result, _, _ = checked
    assert detector.facenet_status.startswith("not available: FaceNet weights not found")
    assert result.facenet_similarity is None
    assert "not available" in result.facenet_note
    js = to_json(result)
    assert js["FaceNetSimilarity"] is None
    assert {"FacePBefore", "FacePAfter", "FaceNetSimilarity", "Status"} <= set(js)
    assert js["NRenders"] == len(result.per_render) and "MeetsMaskDefinition" in js
    assert from_json(verdict.Verification, json.loads(json.dumps(js))) == result


def test_facenet_weights_are_loaded_from_disk(
    checked: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random weights in the place facenet-pytorch caches them: loaded, nothing downloaded."""
    import torch
    from facenet_pytorch import InceptionResnetV1

    torch.manual_seed(0)
    ckpt = tmp_path / "torch" / "checkpoints" / detect.FACENET_FILE
    ckpt.parent.mkdir(parents=True)
    torch.save(InceptionResnetV1(pretrained=None, classify=False).state_dict(), ckpt)
    monkeypatch.delenv(detect.FACENET_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert detect.facenet_weights_path() == ckpt
    det = detect.FaceDetector()
    assert det.facenet_available and det.facenet_status == f"available: {ckpt}"
    _, before, after = checked
    sel = [i for i, d in enumerate(det.detect(before)) if d.box is not None][:2]
    b = [before[i] for i in sel]
    same = det.similarity(b, b)
    assert same is not None and same == pytest.approx(1.0, abs=1e-4)
    other = det.similarity(b, [after[i] for i in sel])
    assert other is not None and -1.0 <= other < same


@pytest.mark.skipif(not VHP_HEAD.is_file(), reason="../shared/data is absent")
def test_real_head_face_is_found(detector: detect.FaceDetector) -> None:
    from ctadeface.io import load_ct

    ct = load_ct(VHP_HEAD)
    renders = render.render_skin(ct.hu(), ct.affine, thresholds=(-300.0,))
    assert max(detector.face_probabilities(renders)) >= 0.99
