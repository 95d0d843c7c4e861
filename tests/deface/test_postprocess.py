"""ctadeface.deface.postprocess: the air margin from the mask's tissue, no bone, nothing far
from the patient, nothing the skull encloses."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from ctadeface.deface.margin import MarginParams
from ctadeface.deface.postprocess import PostProcess, part_boxes, postprocess


def test_postprocess_adds_an_air_margin_and_drops_bone():
    hu = np.full((40, 40, 40), -1000.0, np.float32)
    hu[:, :20, :] = 40.0  # soft tissue, "skin" at j = 20
    hu[18:22, 5:8, 18:22] = 1200.0  # a bone fragment inside the mask's box
    hu[25, 10, 25] = 400.0  # an enhanced vessel
    mask = np.zeros(hu.shape, bool)
    mask[10:30, 5:20, 10:30] = True
    exact = MarginParams(margin_mm=6.0, cell_mm=1.0)  # one voxel per cell
    out = postprocess(mask, hu, (1.0, 2.0, 1.0), PostProcess(margin=exact))
    assert not out[hu > 600].any() and out[25, 10, 25]
    # the margin grows 6 mm = 3 voxels (2 mm spacing) into the air in front of the skin...
    assert out[20, 20:23, 20].all() and not out[20, 23, 20]
    # ...but not sideways along the skin beyond the tissue's edge (k = 10), at any distance
    # from the skin: the nearest patient voxel (the skin under it) must lie within the 2 mm
    # slack of the mask's tissue
    assert out[20, 20:22, 8].all() and not out[20, 20:23, 7].any()
    assert not out[5, 10, 20]  # never into soft tissue outside the mask
    assert not postprocess(np.zeros_like(mask), hu, (1.0, 1.0, 1.0)).any()


def test_postprocess_in_place_overwrites_the_mask_with_the_same_result() -> None:
    hu = np.full((40, 40, 40), -1000.0, np.float32)
    hu[:, :20, :] = 40.0
    hu[18:22, 5:8, 18:22] = 1200.0
    mask = np.zeros(hu.shape, bool, order="F")
    mask[10:30, 5:20, 10:30] = True
    mask[2, 38, 2] = True  # far from the patient: dropped
    params = PostProcess(margin=MarginParams(margin_mm=6.0, cell_mm=1.0))
    expected = postprocess(mask, hu, (1.0, 2.0, 1.0), params)
    assert mask[2, 38, 2] and not expected[2, 38, 2]  # the input is untouched by default
    got = postprocess(mask, hu, (1.0, 2.0, 1.0), params, in_place=True)
    assert got is mask and np.array_equal(got, expected)
    empty = np.zeros_like(mask)
    assert postprocess(empty, hu, (1.0, 1.0, 1.0), in_place=True) is empty


@pytest.mark.parametrize("seed", range(6))
def test_postprocess_on_fine_grids_keeps_at_least_the_margin(seed: int) -> None:
    """At 0.45 x 0.45 x 0.6 mm the distance is measured between the centres of ~1.8 mm cells
    (4 x 4 x 3 voxels): wherever the tissue lies against the cells (a ball of tissue at a
    random sub-cell position and radius), the margin is never thinner than min_mm
    (mask-definition.md: 5 mm), nearly everywhere margin_mm, and within its cell-centre reach
    plus a cell diagonal."""
    rng = np.random.default_rng(seed)
    spacing = (0.45, 0.45, 0.6)
    shape = (90, 100, 70)
    centre = np.array([20.0, 22.0, 21.0]) + rng.uniform(0.0, 1.8, 3)
    idx = np.indices(shape).astype(np.float32) * np.array(spacing).reshape(3, 1, 1, 1)
    radius = np.sqrt(((idx - centre.reshape(3, 1, 1, 1)) ** 2).sum(0))
    mask = radius < 12.0 + rng.uniform(-1.0, 1.0)
    hu = np.where(mask, 40.0, -1000.0).astype(np.float32)  # a ball of tissue in air
    margin = MarginParams(margin_mm=6.0)
    out = postprocess(mask, hu, spacing, PostProcess(margin=margin))
    exact = ndimage.distance_transform_edt(~mask, sampling=spacing)
    assert margin.strides(spacing) == [4, 4, 3]
    assert out[exact <= margin.min_mm].all()  # at least 5 mm
    assert out[exact <= 6.0].mean() > 0.99  # 6 mm nearly everywhere
    cell = np.sqrt(sum((n * s) ** 2 for n, s in zip([4, 4, 3], spacing, strict=True)))
    spread = np.sqrt(sum(((n - 1) * s) ** 2 for n, s in zip([4, 4, 3], spacing, strict=True)))
    assert margin.floor_mm(spacing) == pytest.approx(5.0 + spread)
    assert margin.reach_mm(spacing) == pytest.approx(5.0 + spread)
    assert not out[exact > margin.reach_mm(spacing) + cell].any()


def test_postprocess_does_not_depend_on_how_far_the_box_reaches() -> None:
    """The margin's cells lie on the image's grid: a mask voxel far down the neck widens the
    box (by a number of voxels that is no whole number of cells), and the mask about the head
    stays the same to the voxel."""
    spacing = (0.45, 0.45, 0.6)
    shape = (90, 90, 200)
    idx = np.indices(shape).astype(np.float32) * np.array(spacing).reshape(3, 1, 1, 1)
    head = np.sqrt(((idx - np.array([20.3, 20.1, 90.2]).reshape(3, 1, 1, 1)) ** 2).sum(0)) < 12
    neck = np.hypot(idx[0] - 20.3, idx[1] - 20.1) < 6.0
    body = head | neck
    hu = np.where(body, 40.0, -1000.0).astype(np.float32)
    mask = head & (idx[1] > 22.0)  # the front half of the head
    margin = MarginParams()
    params = PostProcess(margin=margin)
    alone = postprocess(mask, hu, spacing, params)
    stray = mask.copy()
    stray[44, 44, 7] = True  # on the neck, 50 mm below the head's mask
    assert body[44, 44, 7]
    strides = margin.strides(spacing)
    pad = [
        int(np.ceil(margin.reach_mm(spacing) / s)) + st
        for s, st in zip(spacing, strides, strict=True)
    ]
    assert len(part_boxes(stray, pad, strides)) == 2
    widened = postprocess(stray, hu, spacing, params)
    assert widened[44, 44, 7]  # tissue on the patient: kept
    np.testing.assert_array_equal(widened[..., 40:], alone[..., 40:])


def test_each_part_of_the_mask_gets_its_own_box() -> None:
    """Parts of the mask farther apart than their boxes' growth are processed in boxes of their
    own (a stray false positive does not stretch the face's box over the scan); parts whose
    grown boxes meet share one; the boxes are disjoint, on whole cells, and hold every voxel."""
    mask = np.zeros((120, 100, 200), bool)
    mask[20:60, 30:70, 100:160] = True  # the face
    mask[62:64, 30:32, 100:102] = True  # beside it: the same box
    mask[100:103, 80:83, 10:13] = True  # far down: a box of its own
    boxes = part_boxes(mask, [8, 8, 6], [4, 4, 3])
    assert len(boxes) == 2
    covered = np.zeros(mask.shape, int)
    for box in boxes:
        covered[box] += 1
        assert all(b.start % st == 0 for b, st in zip(box, [4, 4, 3], strict=True))
    assert covered.max() == 1 and covered[mask].min() == 1
    face = next(box for box in boxes if box[2].start > 50)
    assert face == (slice(12, 72), slice(20, 80), slice(93, 168))
    alone = np.zeros_like(mask)
    alone[20:60, 30:70, 100:160] = True
    assert part_boxes(alone, [8, 8, 6], [4, 4, 3]) == [
        (slice(12, 68), slice(20, 80), slice(93, 168))
    ]


def test_postprocess_drops_mask_far_from_the_patient() -> None:
    """Network false positives in the air or on a separate object (a wrap, a table) more than
    body_reach_mm from the patient are not face; the patient is the largest body part."""
    spacing = (2.0, 2.0, 2.0)
    idx = np.indices((80, 80, 60)).astype(np.float32) * 2.0
    radius = np.sqrt(((idx - np.array([60.0, 60.0, 60.0]).reshape(3, 1, 1, 1)) ** 2).sum(0))
    hu = np.where(radius < 40.0, 40.0, -1000.0).astype(np.float32)  # the head
    hu[70:74, 70:74, 5:9] = 40.0  # a small separate object ~ 80 mm from it
    mask = np.zeros(hu.shape, bool)
    mask[30:34, 28:32, 30:34] = True  # on the head's surface
    mask[70:74, 70:74, 5:9] = True  # on the object
    mask[5:8, 70:73, 50:53] = True  # in the air, ~ 60 mm from the head
    out = postprocess(mask, hu, spacing, PostProcess(margin=MarginParams(margin_mm=4.0)))
    assert out[30:34, 28:32, 30:34].all()
    assert not out[60:, 60:, :15].any() and not out[:12, 64:, 44:].any()
    # with a margin, what lies off the patient is dropped anyway (it is neither tissue on the
    # patient nor within the margin); without both, the network's mask stays as drawn
    again = postprocess(
        mask, hu, spacing, PostProcess(margin=MarginParams(margin_mm=4.0), body_reach_mm=0.0)
    )
    np.testing.assert_array_equal(again, out)
    kept = postprocess(mask, hu, spacing, PostProcess(margin=None, body_reach_mm=0.0))
    assert kept[70:74, 70:74, 5:9].all() and kept[5:8, 70:73, 50:53].all()


def test_postprocess_draws_the_margin_from_the_tissue_and_bounds_the_network_air() -> None:
    """The margin is computed from the tissue; air the network drew stays only within the
    margin of the patient; a device it drew off the patient, and the air next to it, up to what
    the opening may trim (1.5 mm + half a voxel + a voxel: a nose tip cut off by it)."""
    hu = np.full((40, 60, 40), -1000.0, np.float32)
    hu[:, :20, :] = 40.0  # tissue, skin at j = 20 (1 mm voxels)
    params = PostProcess(margin=MarginParams(margin_mm=6.0, cell_mm=1.0))
    drawn = np.zeros(hu.shape, bool)
    drawn[10:30, 10:40, 10:30] = True  # tissue j 10-19 plus a 20 mm air margin j 20-39
    out = postprocess(drawn, hu, (1.0, 1.0, 1.0), params)
    assert out[20, 20:26, 20].all() and not out[20, 26:, 20].any()  # 6 mm, not 20
    device = hu.copy()
    device[:, 27, :] = 40.0  # a 1 mm plate 8 mm from the skin, which the network drew too
    on_device = postprocess(drawn, device, (1.0, 1.0, 1.0), params)
    assert on_device[20, 20:29, 20].all() and not on_device[20, 29:, 20].any()  # 6 + 3 mm
    tissue_only = postprocess(drawn & (hu > -500), hu, (1.0, 1.0, 1.0), params)
    assert tissue_only[20, 20:26, 20].all() and not tissue_only[20, 26:, 20].any()  # 6 mm
    kept = postprocess(drawn, hu, (1.0, 1.0, 1.0), PostProcess(margin=None))
    np.testing.assert_array_equal(kept, drawn)  # no margin: the network's mask as drawn


def test_postprocess_never_keeps_voxels_inside_the_skull() -> None:
    """A mask that reaches through the skull into the brain loses the brain part (and keeps
    the face); ``skull=None`` keeps what the model drew."""
    spacing = (2.0, 2.0, 2.0)
    idx = np.indices((60, 64, 56)).astype(np.float32) * 2.0
    r = np.sqrt(((idx - np.array([60.0, 64.0, 56.0]).reshape(3, 1, 1, 1)) ** 2).sum(0))
    hu = np.full(r.shape, -1000.0, np.float32)
    hu[r < 46] = 40.0  # scalp and face
    hu[r < 40] = 1000.0  # skull
    hu[r < 33] = 35.0  # brain
    front = idx[1] > 72.0
    mask = front & (r < 46) & (r >= 20)  # face, skull and the front of the brain
    out = postprocess(mask, hu, spacing, PostProcess(margin=None))
    assert out[front & (r >= 40) & (r < 46)].all()  # the face stays
    assert not out[r < 33].any()  # no brain voxel
    kept = postprocess(mask, hu, spacing, PostProcess(margin=None, skull=None))
    assert kept[mask & (r < 33)].all()
