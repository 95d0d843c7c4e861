"""Tests of ctadeface.verify: skin renders, MTCNN face detection, FaceNet similarity, CLI, figure.

Phantoms are small (96^3 at 2.2 mm); MTCNN runs on CPU. The real-head test reads
../shared/data and is skipped when it is absent.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ctadeface.errors import InputError
from ctadeface.provenance import from_json, to_json
from ctadeface.segment import torch_settings
from ctadeface.training.phantom import Phantom, PhantomSpec, make_phantom
from ctadeface.verify import __main__ as verify_cli
from ctadeface.verify import detect, figure, render, verdict
from tests import VHP_HEAD

SPEC = PhantomSpec(shape=(96, 96, 96), spacing=(2.2, 2.2, 2.2))
REAL_HEAD = VHP_HEAD


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """MTCNN on one torch thread."""
    with torch_settings(1):
        yield


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return make_phantom(SPEC)


@pytest.fixture(scope="module")
def no_facenet(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment in which no FaceNet weights can be found."""
    empty = tmp_path_factory.mktemp("nofacenet")
    return {
        detect.FACENET_ENV: str(empty / "missing.pt"),
        "TORCH_HOME": str(empty),
        "XDG_CACHE_HOME": str(empty),
        "HOME": str(empty),
    }


@pytest.fixture(scope="module")
def detector(no_facenet: dict[str, str]) -> detect.FaceDetector:
    mp = pytest.MonkeyPatch()
    for k, v in no_facenet.items():
        mp.setenv(k, v)
    try:
        return detect.FaceDetector()
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def checked(
    phantom: Phantom, detector: detect.FaceDetector
) -> tuple[verdict.Verification, list[render.Render], list[render.Render]]:
    hu = phantom.hu()
    defaced = hu.copy()
    defaced[phantom.face] = -1000.0
    return verdict.verify(hu, defaced, phantom.affine, detector)


def _write(p: Phantom, path: Path, hu: np.ndarray | None = None) -> Path:
    img = p.to_nifti()
    if hu is not None:
        img = nib.Nifti1Image(hu.astype(np.float32), p.affine)
    nib.save(img, str(path))
    return path


def test_renders_count_shape_order_and_yaw(checked: tuple) -> None:
    _, before, _ = checked
    assert len(before) == len(render.THRESHOLDS_HU) * len(render.YAWS_DEG) == 15
    keys = [(r.threshold_hu, r.yaw_deg) for r in before]
    assert keys == [(t, y) for t in render.THRESHOLDS_HU for y in render.YAWS_DEG]
    for r in before:
        assert r.image.dtype == np.uint8 and r.image.ndim == 2
        assert max(r.image.shape) == render.RENDER_PX
        assert (r.image == 0).any() and (r.image > 50).mean() > 0.2  # head on black
    by = {(r.threshold_hu, r.yaw_deg): r.image for r in before}
    a, b = by[(-300.0, 30.0)], by[(-300.0, -30.0)]
    assert a.shape != b.shape or np.abs(a.astype(int) - b).mean() > 5


def test_yaw_mirrors_and_front_is_anterior(phantom: Phantom, detector: detect.FaceDetector) -> None:
    """The unposed phantom is left-right symmetric: yaw +30 and -30 silhouettes mirror each
    other; the face is seen from the front, not from behind."""
    renders = render.render_skin(phantom.hu(), phantom.affine, thresholds=(-300.0,), yaws=(-30, 30))
    left, right = (r.image > 0 for r in renders)
    assert left.shape == right.shape
    iou = (left & right[:, ::-1]).sum() / (left | right[:, ::-1]).sum()
    assert iou > 0.95
    front = render.render_skin(phantom.hu(), phantom.affine, yaws=(-30, 0, 30))
    back = render.render_skin(phantom.hu(), phantom.affine, yaws=(150, 180, 210))
    assert max(detector.face_probabilities(front)) > 0.9
    assert max(detector.face_probabilities(back)) < 0.5


def test_voxel_order_does_not_change_the_render(phantom: Phantom) -> None:
    ras = render.render_skin(phantom.hu(), phantom.affine, thresholds=(-300.0,), yaws=(0.0,))[0]
    other = make_phantom(SPEC, axis_map=(2, 0, 1), flips=(True, False, True))
    assert not np.array_equal(other.affine, phantom.affine)
    pil = render.render_skin(other.hu(), other.affine, thresholds=(-300.0,), yaws=(0.0,))[0]
    assert np.allclose(pil.frame.center_mm, ras.frame.center_mm, atol=1.0)
    assert pil.crop == ras.crop and pil.image.shape == ras.image.shape
    assert np.abs(pil.image.astype(int) - ras.image).mean() < 3.0


def test_anisotropic_spacing_gives_a_similar_render(phantom: Phantom) -> None:
    ras = render.render_skin(phantom.hu(), phantom.affine, thresholds=(-300.0,), yaws=(0.0,))
    aniso = make_phantom(SPEC, shape=(132, 132, 66), spacing=(1.6, 1.6, 3.2))
    r = render.render_skin(aniso.hu(), aniso.affine, thresholds=(-300.0,), yaws=(0.0,), like=ras)[0]
    a, b = ras[0].image > 0, r.image > 0
    assert (a & b).sum() / (a | b).sum() > 0.9
    assert np.corrcoef(ras[0].image.ravel(), r.image.ravel())[0, 1] > 0.7


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


def test_cli_same_file_twice_is_a_face(
    phantom: Phantom, tmp_path: Path, no_facenet: dict[str, str], capsys, monkeypatch
) -> None:
    for k, v in no_facenet.items():
        monkeypatch.setenv(k, v)
    orig = _write(phantom, tmp_path / "orig.nii.gz")
    assert verify_cli.main([str(orig), str(orig)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    js = json.loads(out[0])
    assert js["Status"] == "face-detected" and js["FacePAfter"] == js["FacePBefore"] >= 0.5
    assert js["FaceNetSimilarity"] is None


def test_cli_defaced_exits_0_and_writes_png(
    phantom: Phantom, tmp_path: Path, no_facenet: dict[str, str], capsys, monkeypatch
) -> None:
    from PIL import Image

    for k, v in no_facenet.items():
        monkeypatch.setenv(k, v)
    hu = phantom.hu()
    hu[phantom.face] = -1000.0
    orig = _write(phantom, tmp_path / "orig.nii.gz")
    defaced = _write(phantom, tmp_path / "defaced.nii.gz", hu)
    png = tmp_path / "fig.png"
    code = verify_cli.main([str(orig), str(defaced), "--png", str(png), "--face-threshold", "0.95"])
    js = json.loads(capsys.readouterr().out)
    assert code == (1 if js["FacePAfter"] >= 0.95 else 0)
    assert js["FacePAfter"] < js["FacePBefore"] and js["PNG"] == str(png)
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 0


def test_cli_grid_mismatch_is_one_line(phantom: Phantom, tmp_path: Path) -> None:
    orig = _write(phantom, tmp_path / "orig.nii.gz")
    small = tmp_path / "small.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.int16), phantom.affine), str(small))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run(
        [sys.executable, "-m", "ctadeface.verify", str(orig), str(small)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert p.returncode == InputError.exit_code and p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "small.nii.gz" in lines[0] and "Traceback" not in p.stderr


def test_cli_bad_usage_and_missing_file(tmp_path: Path, capsys) -> None:
    assert verify_cli.main(["only-one"]) == 64
    assert verify_cli.main([str(tmp_path / "a.nii"), str(tmp_path / "b.nii")]) == 65
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "a.nii" in err[1]


def test_verify_refuses_different_shapes(detector: detect.FaceDetector) -> None:
    with pytest.raises(InputError, match="differ"):
        verdict.verify(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), np.eye(4), detector)


def test_figure_png_decodes(checked: tuple, phantom: Phantom) -> None:
    from PIL import Image

    _, before, after = checked
    data = figure.figure_png(before, after, phantom.face, phantom.hu(), phantom.affine, tile=100)
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG" and im.mode == "RGB" and im.size == (500, 300)
        px = np.asarray(im).astype(int)
    red = px[..., 0] > px[..., 1] + 60  # the mask is drawn in red on the slices only
    assert red[200:].any() and not red[:200].any()


def test_png_bytes_round_trip() -> None:
    from PIL import Image

    gray = (np.arange(12 * 7) % 256).astype(np.uint8).reshape(12, 7)
    with Image.open(io.BytesIO(figure.png_bytes(gray))) as im:
        assert np.array_equal(np.asarray(im), gray)
    rgb = np.stack([gray, 255 - gray, gray // 2], axis=2)
    with Image.open(io.BytesIO(figure.png_bytes(rgb))) as im:
        assert np.array_equal(np.asarray(im), rgb)


@pytest.mark.skipif(not REAL_HEAD.is_file(), reason="../shared/data is absent")
def test_real_head_face_is_found(detector: detect.FaceDetector) -> None:
    from ctadeface.io import load_ct

    ct = load_ct(REAL_HEAD)
    renders = render.render_skin(ct.hu(), ct.affine, thresholds=(-300.0,))
    assert max(detector.face_probabilities(renders)) >= 0.99
