"""Tests of ctadeface.verify.render: skin renders; their count, order and yaw, and that voxel
order and spacing do not change them."""

from __future__ import annotations

import numpy as np

from ctadeface.training.phantom import Phantom, PhantomSpec, make_phantom
from ctadeface.verify import detect, render


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
    other = make_phantom(phantom.spec, axis_map=(2, 0, 1), flips=(True, False, True))
    assert not np.array_equal(other.affine, phantom.affine)
    pil = render.render_skin(other.hu(), other.affine, thresholds=(-300.0,), yaws=(0.0,))[0]
    assert np.allclose(pil.frame.center_mm, ras.frame.center_mm, atol=1.0)
    assert pil.crop == ras.crop and pil.image.shape == ras.image.shape
    assert np.abs(pil.image.astype(int) - ras.image).mean() < 3.0


def test_anisotropic_spacing_gives_a_similar_render(phantom: Phantom) -> None:
    ras = render.render_skin(phantom.hu(), phantom.affine, thresholds=(-300.0,), yaws=(0.0,))
    aniso = make_phantom(phantom.spec, shape=(132, 132, 66), spacing=(1.6, 1.6, 3.2))
    r = render.render_skin(aniso.hu(), aniso.affine, thresholds=(-300.0,), yaws=(0.0,), like=ras)[0]
    a, b = ras[0].image > 0, r.image > 0
    assert (a & b).sum() / (a | b).sum() > 0.9
    assert np.corrcoef(ras[0].image.ravel(), r.image.ravel())[0, 1] > 0.7


def test_a_patch_renders_as_the_whole_defaced_image() -> None:
    """Rendering the original with a patch gives the same pictures, bit for bit, as rendering
    the patched copy: on a fine grid (blocks averaged, the box off the block edges and at the
    grid's end) and on a coarse one (no blocks)."""
    for shape, spacing in (((131, 131, 97), (0.9, 0.9, 1.3)), ((66, 66, 50), (2.2, 2.2, 2.6))):
        ph = make_phantom(PhantomSpec(shape=shape, spacing=spacing))
        hu = ph.hu()
        box = (slice(7, shape[0] - 3), slice(shape[1] // 2 + 1, shape[1]), slice(5, shape[2] - 8))
        rng = np.random.default_rng(0)
        changed = hu[box] * 0.0 - 1000.0 + rng.normal(0, 5, hu[box].shape).astype(np.float32)
        patch = render.Patch(box, changed.astype(np.float32))
        assert patch.fits(hu.shape) and not patch.fits((1, 2, 3))
        whole = patch.applied(hu)
        assert not np.array_equal(whole, hu)
        before = render.render_skin(hu, ph.affine, yaws=(0.0, 60.0))
        expected = render.render_skin(whole, ph.affine, yaws=(0.0, 60.0), like=before)
        got = render.render_skin(hu, ph.affine, yaws=(0.0, 60.0), like=before, patch=patch)
        assert [r.crop for r in got] == [r.crop for r in expected]
        for g, e in zip(got, expected, strict=True):
            assert np.array_equal(g.image, e.image)
        assert any(not np.array_equal(g.image, b.image) for g, b in zip(got, before, strict=True))


def test_threads_do_not_change_the_renders(phantom: Phantom) -> None:
    one = render.render_skin(phantom.hu(), phantom.affine)
    two = render.render_skin(phantom.hu(), phantom.affine, threads=3)
    assert [(r.threshold_hu, r.yaw_deg) for r in two] == [(r.threshold_hu, r.yaw_deg) for r in one]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(one, two, strict=True))


def test_block_means_do_not_depend_on_memory_layout_or_on_the_region() -> None:
    rng = np.random.default_rng(3)
    a = np.asfortranarray(rng.normal(0, 500, (24, 20, 18)).astype(np.float32))
    f = (4, 2, 3)
    means = render._blocks(a, f)
    direct = a.reshape(6, 4, 10, 2, 6, 3).mean(axis=(1, 3, 5), dtype=np.float64)
    assert means.dtype == np.float32 and np.allclose(means, direct, rtol=0, atol=1e-3)
    assert np.array_equal(means, render._blocks(np.ascontiguousarray(a), f))
    assert np.array_equal(means[1:3, 2:5, 1:4], render._blocks(np.array(a[4:12, 4:10, 3:12]), f))
