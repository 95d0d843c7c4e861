"""Tests of ctadeface.body."""

from __future__ import annotations

import numpy as np

from ctadeface.body import bounding_box, occupied


def test_occupied_lists_the_slices_holding_true_voxels_in_any_memory_layout() -> None:
    mask = np.zeros((9, 11, 7), bool)
    mask[2, 3, 1] = mask[6, 10, 4] = mask[2, 5, 6] = True
    for array in (mask, np.asfortranarray(mask), np.pad(mask, 1)[1:-1, 1:-1, 1:-1]):
        got = occupied(array)
        assert [g.tolist() for g in got] == [[2, 6], [3, 5, 10], [1, 4, 6]]
    assert all(g.size == 0 for g in occupied(np.zeros((3, 4, 5), bool)))


def test_bounding_box_holds_every_true_voxel_and_is_empty_for_none() -> None:
    mask = np.zeros((9, 11, 7), bool)
    mask[2, 3, 1] = mask[6, 10, 4] = True
    box = bounding_box(mask)
    assert box == (slice(2, 7), slice(3, 11), slice(1, 5))
    assert mask[box].sum() == mask.sum()
    assert bounding_box(np.zeros((3, 4, 5), bool)) == (slice(0, 0),) * 3


def test_largest_component_keeps_the_biggest_face_connected_part() -> None:
    from ctadeface.body import largest_component

    mask = np.zeros((6, 6, 6), bool)
    mask[0:2, 0:2, 0:2] = True  # 8 voxels
    mask[4:6, 4:6, 3:6] = True  # 12 voxels
    mask[3, 3, 3] = True  # touches the second part only at a corner: its own part
    got = largest_component(mask)
    assert got.sum() == 12 and got[5, 5, 5] and not got[0, 0, 0] and not got[3, 3, 3]
    single = np.zeros((4, 5), bool)  # any dimension; one part comes back as it is
    single[1:3, 1:4] = True
    assert largest_component(single) is single
    empty = np.zeros((3, 3, 3), bool)
    assert not largest_component(empty).any()
