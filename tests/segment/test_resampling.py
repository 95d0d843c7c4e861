"""Tests of ctadeface.segment.resampling: the body box and linear resampling in windows and
blocks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ctadeface.segment import resampling


def full_maps(src: tuple[int, ...], dst: tuple[int, ...]) -> list[resampling.AxisMap]:
    return [resampling.axis_map(n, m) for n, m in zip(src, dst, strict=True)]


@settings(max_examples=40, deadline=None)
@given(
    src=st.tuples(*[st.integers(1, 12)] * 3),
    dst=st.tuples(*[st.integers(1, 12)] * 3),
    seed=st.integers(0, 2**16),
)
def test_resample_is_torch_trilinear(src, dst, seed) -> None:
    """Same convention as F.interpolate(mode='trilinear', align_corners=False)."""
    volume = torch.from_numpy(np.random.default_rng(seed).normal(size=src).astype(np.float32))
    ours = resampling.resample(volume, full_maps(src, dst), lambda t: t.float())
    theirs = torch.nn.functional.interpolate(
        volume[None, None], size=dst, mode="trilinear", align_corners=False
    )[0, 0]
    # three passes of float32 convex combinations: per pass two roundings of 2^-24 x max |x|,
    # and torch's weights come from a float32 source coordinate (x + 0.5) * n_in / n_out - 0.5,
    # off by up to 3 x 2^-24 x n_in voxels, which moves a value by twice that x max |x|
    per_pass = 2 + 6 * max(src)
    bound = 3 * per_pass * 2.0**-24 * float(volume.abs().max())
    torch.testing.assert_close(ours, theirs, rtol=0.0, atol=bound)


def test_transform_is_applied_before_interpolation() -> None:
    stored = torch.tensor([[[0, 100]]], dtype=torch.int16)  # 1x1x2, upsampled to 1x1x4
    maps = full_maps((1, 1, 2), (1, 1, 4))
    clipped = resampling.resample(stored, maps, lambda t: t.float().clamp(max=50))
    assert clipped.dtype == torch.float32
    assert clipped.flatten().tolist() == [0.0, 12.5, 37.5, 50.0]


@pytest.mark.parametrize("flips", [(0,), (1,), (2,), (0, 2), (0, 1, 2)])
@pytest.mark.parametrize("order", [1, 3])
def test_a_reversed_view_resamples_as_its_reversed_copy(flips, order) -> None:
    """The forward view of an array that runs backwards along ``flips``, read reversed, gives
    the very floats its reversed copy gives (small blocks, so that blocks are flipped too)."""
    rng = np.random.default_rng(1)
    stored = rng.integers(-1000, 1000, size=(21, 16, 11)).astype(np.int16)
    dst = (9, 23, 6)
    reversed_copy = np.ascontiguousarray(np.flip(stored, flips))
    maps = [
        resampling.axis_map(n, m, (1, m - 1), order=order)
        for n, m in zip(stored.shape, dst, strict=True)
    ]

    def to_float(t: torch.Tensor) -> torch.Tensor:
        return t.float() * 0.5 - 3.0

    expected = resampling.resample(torch.from_numpy(reversed_copy), maps, to_float)
    got = resampling.resample(torch.from_numpy(stored), maps, to_float, flips=flips)
    assert torch.equal(got, expected)
    for axis in range(3):  # one pass, blocks of a few rows
        one = resampling._apply_axis(
            torch.from_numpy(stored), axis, maps[axis], to_float, chunk_elements=64, flips=flips
        )
        ref = resampling._apply_axis(
            torch.from_numpy(reversed_copy), axis, maps[axis], to_float, chunk_elements=64
        )
        assert torch.equal(one, ref)
        same = resampling.axis_map(stored.shape[axis], stored.shape[axis], (2, 7))  # a gather
        gathered = resampling._apply_axis(torch.from_numpy(stored), axis, same, flips=flips)
        ref = resampling._apply_axis(torch.from_numpy(reversed_copy), axis, same)
        assert torch.equal(gathered, ref)


def test_a_window_is_a_block_of_the_whole_result() -> None:
    """Up to float rounding: the filters run as matrix products of other sizes, whose kernels
    may sum in another order. Linear interpolation is a convex combination per axis, so each
    of the three float32 passes rounds by at most 2 x 2^-24 of the largest input, whatever the
    output's own size (a value near 0 can come from inputs near +-1000)."""
    rng = np.random.default_rng(0)
    volume = torch.from_numpy(rng.integers(-1000, 1000, size=(20, 17, 9)).astype(np.int16))
    dst = (8, 7, 4)
    whole = resampling.resample(volume, full_maps(volume.shape, dst), lambda t: t.float())
    windows = [(2, 6), (0, 7), (1, 3)]
    maps = [
        resampling.axis_map(n, m, w) for n, m, w in zip(volume.shape, dst, windows, strict=True)
    ]
    part = resampling.resample(volume, maps, lambda t: t.float())
    bound = 2 * 3 * 2.0**-24 * float(volume.abs().max()) * 2  # each side off by that much
    torch.testing.assert_close(part, whole[2:6, 0:7, 1:3], rtol=0.0, atol=bound)


def test_resample_decide_blocks_match_one_pass_and_source_window_is_enough() -> None:
    rng = np.random.default_rng(1)
    low = torch.from_numpy(rng.normal(size=(2, 6, 5, 4)).astype(np.float32))
    shape = (31, 23, 17)
    expected = torch.nn.functional.interpolate(
        low[None], size=shape, mode="trilinear", align_corners=False
    )[0]
    # both sides interpolate in float32 (three convex passes, each channel off by at most
    # 6 x 2^-24 x max |low|): where the two channels lie closer than twice that, either
    # decision is right
    tie = 2 * 6 * 2.0**-24 * float(low.abs().max())
    sure = ((expected[1] - expected[0]).abs() > tie).numpy()[3:29, 0:23, 5:11]
    expected = (expected[1] > expected[0]).numpy()
    box = [(3, 29), (0, 23), (5, 11)]
    needed = [
        resampling.source_window(n, m, b) for n, m, b in zip(low.shape[1:], shape, box, strict=True)
    ]
    cut = low[
        :, needed[0][0] : needed[0][1], needed[1][0] : needed[1][1], needed[2][0] : needed[2][1]
    ]
    maps = [
        resampling.axis_map(n, m, b, offset=w[0])
        for n, m, b, w in zip(low.shape[1:], shape, box, needed, strict=True)
    ]
    got = resampling.resample_decide(cut, maps, lambda b: b[1] > b[0], chunk_voxels=100)
    assert sure.mean() > 0.99
    assert np.array_equal(got[sure], expected[3:29, 0:23, 5:11][sure])


def test_target_shape_rounds_like_nnunet() -> None:
    assert resampling.target_shape((512, 512, 300), (0.45, 0.45, 0.6), (2.5, 2.5, 2.5)) == (
        92,
        92,
        72,
    )
    assert resampling.target_shape((3, 3, 3), (0.1, 0.1, 0.1), (5.0, 5.0, 5.0)) == (1, 1, 1)


def test_body_box_finds_the_largest_body_part_with_margin() -> None:
    volume = np.full((100, 80, 60), -1000, np.int16)
    volume[30:60, 20:50, 10:40] = 40  # the head
    volume[90:95, 0:80, 0:60] = 300  # a small table, apart from the head
    box = resampling.body_box(volume, (1.0, 1.0, 1.0), -500, margin_mm=5.0)
    assert box is not None
    for s, (lo, hi) in zip(box, [(30, 60), (20, 50), (10, 40)], strict=True):
        assert s.start <= lo - 5 and s.stop >= hi + 5  # margin (and a coarse-grid step) kept
        assert s.start >= lo - 5 - 8 and s.stop <= hi + 5 + 8
    assert box[0].stop < 90  # the table is not the largest part


def test_body_box_of_air_or_padding_is_none() -> None:
    volume = np.full((20, 20, 20), -1024, np.int16)
    volume[:5] = -3024
    assert resampling.body_box(volume, (1.0, 1.0, 1.0), -500, margin_mm=10.0) is None


@pytest.mark.parametrize("spacing", [(0.4, 0.4, 0.6), (5.0, 5.0, 5.0)])
def test_body_box_stays_inside_the_grid(spacing) -> None:
    volume = np.full((40, 40, 40), 40, np.int16)
    box = resampling.body_box(volume, spacing, -500, margin_mm=30.0)
    assert box == (slice(0, 40), slice(0, 40), slice(0, 40))


def _sampled_then_max_filter(cells, source_shape, shape, spacing, margin_mm) -> np.ndarray:
    """body_on_grid's definition, the slow way: nearest sampling, then a box maximum filter."""
    from scipy import ndimage

    coarse, steps = cells
    index = []
    for n_src, n, step, n_cells in zip(source_shape, shape, steps, coarse.shape, strict=True):
        source = (np.arange(n) + 0.5) * (n_src / n) - 0.5
        index.append(np.clip(np.floor(source / step + 0.5).astype(int), 0, n_cells - 1))
    size = [2 * int(np.ceil(margin_mm / s)) + 1 for s in spacing]
    return ndimage.maximum_filter(coarse[np.ix_(*index)], size=size, mode="constant", cval=False)


@settings(max_examples=60, deadline=None)
@given(
    cells=st.tuples(*[st.integers(1, 10)] * 3),
    steps=st.tuples(*[st.integers(1, 8)] * 3),
    ratio=st.tuples(*[st.floats(0.1, 3.0)] * 3),
    spacing=st.tuples(*[st.floats(0.3, 6.0)] * 3),
    margin=st.floats(0.0, 30.0),
    seed=st.integers(0, 2**16),
)
def test_body_on_grid_is_nearest_sampling_then_a_box_maximum_filter(
    cells, steps, ratio, spacing, margin, seed
) -> None:
    rng = np.random.default_rng(seed)
    coarse = rng.random(cells) < rng.uniform(0.0, 0.3)
    source = [max(1, c * s - int(rng.integers(0, s))) for c, s in zip(cells, steps, strict=True)]
    shape = [max(1, int(n * r)) for n, r in zip(source, ratio, strict=True)]
    found = (coarse, list(steps))
    ours = resampling.body_on_grid(found, source, shape, spacing, margin)
    assert ours.shape == tuple(shape)
    np.testing.assert_array_equal(
        ours, _sampled_then_max_filter(found, source, shape, spacing, margin)
    )


def test_resample_decide_is_the_same_whatever_the_block_size() -> None:
    rng = np.random.default_rng(2)
    low = torch.from_numpy(rng.normal(size=(2, 7, 6, 5)).astype(np.float32))
    shape = (40, 19, 13)
    maps = [resampling.axis_map(n, m) for n, m in zip(low.shape[1:], shape, strict=True)]
    whole = resampling.resample_decide(low, maps, lambda b: b[1] > b[0], chunk_voxels=10**9)
    for chunk in (1, 19 * 13 * 3, 19 * 13 * 7 + 5):
        blocks = resampling.resample_decide(low, maps, lambda b: b[1] > b[0], chunk_voxels=chunk)
        assert np.array_equal(blocks, whole)
