"""Tests of ctadeface.verify.identify: the rank test against a gallery, its p, the gallery's
self-exclusion, the descriptor."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from ctadeface.verify import identify
from ctadeface.verify.identify import (
    Gallery,
    identity_test,
    rank_views,
    rank_yaws,
    summarise,
    upper_tail,
)

VIEWS = ((-300.0, 0.0), (-300.0, 30.0), (-100.0, 0.0))


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, 128)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True) * 0.6


def _gallery(rng: np.random.Generator, heads: int) -> Gallery:
    return Gallery(
        VIEWS, tuple(f"h{i}" for i in range(heads)), np.stack([_unit(rng, 3) for _ in range(heads)])
    )


def test_upper_tail_is_the_binomial_one_for_equal_chances() -> None:
    n, p = 12, 1 / 11
    for k in range(n + 1):
        exact = sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k, n + 1))
        assert upper_tail(k, [p] * n) == pytest.approx(exact, rel=1e-12, abs=1e-15)
    assert upper_tail(0, []) == 1.0


def test_upper_tail_of_unequal_chances_is_poisson_binomial() -> None:
    chances = [0.5, 0.1]
    assert upper_tail(1, chances) == pytest.approx(1 - 0.5 * 0.9)
    assert upper_tail(2, chances) == pytest.approx(0.05)


def test_a_probe_equal_to_its_original_ranks_first_and_is_identified() -> None:
    rng = np.random.default_rng(0)
    gallery = _gallery(rng, 10)
    own = dict(zip(VIEWS, _unit(rng, 3), strict=True))
    result = identity_test(own, own, gallery)  # two yaws: 0 (two levels) and 30
    assert (result.views_tested, result.rank1_views, result.gallery_heads) == (2, 2, 10)
    assert result.chance == pytest.approx(1 / 11)
    assert result.p == pytest.approx((1 / 11) ** 2) and result.identified


def test_a_probe_unlike_its_original_is_at_chance() -> None:
    rng = np.random.default_rng(1)
    gallery = _gallery(rng, 20)
    own = dict(zip(VIEWS, _unit(rng, 3), strict=True))
    probe = dict(zip(VIEWS, _unit(rng, 3), strict=True))  # another face
    ranks = rank_yaws(probe, own, gallery)
    result = identity_test(probe, own, gallery)
    assert result.rank1_views == sum(hit for hit, _ in ranks.values()) and not result.identified


def test_views_without_an_original_or_a_gallery_head_are_not_tested() -> None:
    rng = np.random.default_rng(2)
    gallery = _gallery(rng, 5)
    gallery.descriptors[:, 1] = np.nan  # nobody's face seen at the second view
    own = dict(zip(VIEWS[:2], _unit(rng, 2), strict=True))  # the original has no third view
    probe = dict(zip(VIEWS, _unit(rng, 3), strict=True))
    result = identity_test(probe, own, gallery)
    assert result.views_tested == 1
    nothing = identity_test({}, own, gallery)
    assert (nothing.views_tested, nothing.p, nothing.identified) == (0, 1.0, False)


def _two_levels_three_yaws(rng: np.random.Generator, heads: int) -> Gallery:
    views = tuple((level, yaw) for level in (-500.0, -300.0) for yaw in (0.0, 30.0, 60.0))
    names = tuple(f"h{i}" for i in range(heads))
    return Gallery(views, names, np.stack([_unit(rng, len(views)) for _ in range(heads)]))


def test_the_levels_of_one_yaw_are_one_trial() -> None:
    """A probe like its original at both levels of one yaw only: two rank-1 renders, but one
    rank-1 yaw of three, which chance explains."""
    rng = np.random.default_rng(5)
    gallery = _two_levels_three_yaws(rng, 19)
    own = dict(zip(gallery.views, _unit(rng, 6), strict=True))
    probe = {v: own[v] if v[1] == 0.0 else -own[v] for v in gallery.views}
    by_render = rank_views(probe, own, gallery)
    assert sorted(v for v, (hit, _) in by_render.items() if hit) == [(-500.0, 0.0), (-300.0, 0.0)]
    assert summarise(by_render, gallery).identified  # two renders of six at chance 1/20
    result = identity_test(probe, own, gallery)
    assert (result.views_tested, result.rank1_views) == (3, 1)
    assert result.p == pytest.approx(1 - (19 / 20) ** 3) and not result.identified


def test_a_yaw_ranks_by_mean_distance_over_its_levels() -> None:
    """Nearest at one level is not enough when the other level is far; a gallery head seen at
    one level only is compared at that level."""
    views = ((-500.0, 0.0), (-300.0, 0.0))
    e = np.eye(128, dtype=np.float32)
    own = {views[0]: e[0], views[1]: e[1]}
    probe = {views[0]: e[0] * 1.0, views[1]: e[1] + 2 * e[2]}  # distances 0 and 2: mean 1
    near = np.stack([e[0] + 0.9 * e[3], e[1] + 0.9 * e[3]])  # 0.9 and ~2.19 from the probe
    one_level = np.stack([np.full(128, np.nan, np.float32), e[1] + 1.5 * e[2]])  # 0.5 at -300
    gallery = Gallery(views, ("near", "one level"), np.stack([near, one_level]))
    assert rank_views(probe, own, gallery) == {views[0]: (True, 1 / 2), views[1]: (False, 1 / 3)}
    assert rank_yaws(probe, own, gallery) == {0.0: (False, 1 / 3)}  # 1 > 0.5 (one level)
    far = Gallery(views, ("near",), near[None])  # mean 1.55 > 1
    assert rank_yaws(probe, own, far) == {0.0: (True, 1 / 2)}


def test_the_scan_itself_is_left_out_of_its_gallery(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    gallery = _gallery(rng, 4)
    own = dict(zip(VIEWS, gallery.descriptors[2] + 1e-3, strict=True))  # head 2 is this scan
    assert gallery.without(own).names == ("h0", "h1", "h3")
    path = tmp_path / "g.npz"
    gallery.save(path)
    back = Gallery.load(path)
    assert back.views == VIEWS and back.names == gallery.names
    np.testing.assert_array_equal(back.descriptors, gallery.descriptors)


def test_the_control_takes_the_original_and_gallery_at_another_view() -> None:
    rng = np.random.default_rng(4)
    gallery = _gallery(rng, 8)
    own = dict(zip(VIEWS, _unit(rng, 3), strict=True))
    shifted = {VIEWS[0]: VIEWS[2]}  # probe at view 0 against originals at view 2
    result = identity_test({VIEWS[0]: own[VIEWS[2]]}, own, gallery, enrolled_view=shifted)
    assert (result.views_tested, result.rank1_views) == (1, 1)


def test_the_shipped_gallery_has_views_of_the_renders_and_many_heads() -> None:
    from ctadeface.verify.render import THRESHOLDS_HU, YAWS_DEG

    gallery = Gallery.load()
    assert gallery.views == tuple((t, y) for t in THRESHOLDS_HU for y in YAWS_DEG)
    assert gallery.descriptors.shape == (len(gallery.names), len(gallery.views), 128)
    seen = ~np.isnan(gallery.descriptors[:, :, 0])
    assert seen.any(axis=1).sum() >= 20  # heads with a face on at least one view
    assert identify.GALLERY.stat().st_size < 5 * 1024**2


def test_the_descriptor_of_a_render_is_128_floats(checked: tuple, detector) -> None:
    _, before, _ = checked
    faces = detector.detect(before[:5], cnn=False)
    box = next(f.box for f in faces if f.box is not None)
    d = identify.Describer().describe(before[0].image, box)
    assert d.shape == (128,) and d.dtype == np.float32 and 0.5 < float(np.linalg.norm(d)) < 1.5
