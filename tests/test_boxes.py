"""Tests of ctadeface.boxes."""

from __future__ import annotations

import numpy as np

from ctadeface.boxes import occupied


def test_occupied_lists_the_slices_holding_true_voxels_in_any_memory_layout() -> None:
    mask = np.zeros((9, 11, 7), bool)
    mask[2, 3, 1] = mask[6, 10, 4] = mask[2, 5, 6] = True
    for array in (mask, np.asfortranarray(mask), np.pad(mask, 1)[1:-1, 1:-1, 1:-1]):
        got = occupied(array)
        assert [g.tolist() for g in got] == [[2, 6], [3, 5, 10], [1, 4, 6]]
    assert all(g.size == 0 for g in occupied(np.zeros((3, 4, 5), bool)))
