"""ctadeface.segment.fast: pieces of the fast strategy tested on their own (the strategy as a
whole: test_segmenter.py, test_localise.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ctadeface.segment import fast, resampling


def _scaled(t: torch.Tensor) -> torch.Tensor:
    return t.float() * 0.5 - 3.0


@pytest.mark.parametrize("axis", [None, 0, 1, 2])
def test_clip_bounds_do_not_depend_on_the_source_memory_order(axis) -> None:
    rng = np.random.default_rng(0)
    stored = np.asfortranarray(rng.integers(-1000, 2000, size=(9, 8, 7), dtype=np.int16))
    turned = np.flip(stored.transpose(1, 0, 2), 0)  # a view as a model orientation gives it
    forward = torch.from_numpy(np.flip(turned, 0))  # torch gets the forward view, flips=(0,)
    contiguous = torch.from_numpy(np.ascontiguousarray(turned))
    assert not forward.is_contiguous()
    maps = [resampling.axis_map(n, n) for n in turned.shape]
    low = torch.from_numpy(rng.normal(scale=800.0, size=turned.shape).astype(np.float32))
    expected, got = low.clone(), low.clone()
    fast._clip_to_source_range(expected, contiguous, _scaled, axis, maps)
    fast._clip_to_source_range(got, forward, _scaled, axis, maps, flips=(0,))
    assert torch.equal(got, expected)
    assert not torch.equal(got, low)  # the bounds clipped something
