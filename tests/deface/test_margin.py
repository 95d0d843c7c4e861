"""The air margin drawn from the mask's tissue (ctadeface.deface.margin)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from ctadeface.deface.margin import MarginParams, with_margin

SPACING = (1.0, 1.0, 1.0)


def _slab(shape: tuple[int, int, int] = (40, 60, 40), skin: int = 30) -> np.ndarray:
    """Body (non-air) voxels: everything below j = ``skin`` (1 mm voxels)."""
    body = np.zeros(shape, bool)
    body[:, :skin, :] = True
    return body


def test_margin_is_margin_mm_of_air_in_front_of_the_tissue() -> None:
    body = _slab()
    tissue = np.zeros_like(body)
    tissue[10:30, 20:30, 10:30] = True  # face tissue up to the skin (j = 29)
    out = with_margin(tissue, body, SPACING, params=MarginParams(margin_mm=8.0, cell_mm=1.0))
    assert out[tissue].all()
    assert out[20, 30:38, 20].all() and not out[20, 38:, 20].any()  # 8 mm, no more
    assert not out[body & ~tissue].any()  # never other patient voxels
    # it stops where the tissue stops, give or take the 2 mm slack: beside the tissue the
    # nearest patient voxel is not tissue
    assert out[20, 30, 8] and not out[20, 30, 7] and not out[7, 30, 20]


def test_air_the_patient_encloses_is_never_margin() -> None:
    """A sinus (air inside the patient) beside the face tissue stays out of the mask, even where
    the network marked it."""
    body = _slab()
    body[15:25, 14:18, 15:25] = False  # an air pocket 2 mm behind the tissue
    tissue = np.zeros_like(body)
    tissue[10:30, 20:30, 10:30] = True
    tissue[15:25, 16:18, 15:25] = True  # the network even marked part of the pocket
    out = with_margin(tissue, body, SPACING, params=MarginParams(margin_mm=8.0, cell_mm=1.0))
    assert not out[15:25, 14:18, 15:25].any()
    assert out[20, 30:38, 20].all()


def test_margin_is_measured_from_the_skin_under_a_thin_shell() -> None:
    """A 1 mm shell 3 mm in front of the skin is no patient: the margin reaches 8 mm from the
    skin through it. The network's mask on the shell stays (a shell moulded to the face carries
    its shape); on a device far from the patient it is dropped."""
    body = _slab()
    body[:, 33, :] = True  # the shell: j = 33, a 3 mm gap (j 30-32) behind it
    tissue = np.zeros_like(body)
    tissue[10:30, 20:30, 10:30] = True
    tissue[0:5, 33, 0:5] = True  # the network also marked a corner of the shell
    body[10:20, 50:55, 10:20] = True  # a device 20 mm from the skin...
    tissue[10:20, 50:55, 10:20] = True  # ...that the network marked
    out = with_margin(tissue, body, SPACING, params=MarginParams(margin_mm=8.0, cell_mm=1.0))
    assert out[20, 30:38, 20].all() and not out[20, 38:50, 20].any()
    assert out[20, 33, 20]  # the shell within the margin is part of it
    assert out[0:5, 33, 0:5].all()
    assert not out[10:20, 50:55, 10:20].any()
    # a thick plate not joined to the patient is a device too (the patient is the largest part)
    thick = _slab()
    thick[:, 33:40, :] = True
    plate = with_margin(tissue, thick, SPACING, params=MarginParams(margin_mm=8.0, cell_mm=1.0))
    assert plate[20, 30:38, 20].all() and not plate[20, 38:, 20].any()
    # a 1 mm sheet flush on the skin is patient, but the network left it out: the slack lets the
    # margin pass it, 8 mm from the tissue (the sheet itself stays, as a device may)
    sheet = _slab(skin=31)
    sheet_out = with_margin(tissue, sheet, SPACING, params=MarginParams(margin_mm=8.0, cell_mm=1.0))
    assert sheet_out[20, 31:38, 20].all() and not sheet_out[20, 38:, 20].any()
    assert not sheet_out[20, 30, 20]


def test_a_rounded_nose_on_coarse_voxels_gets_the_whole_margin() -> None:
    """A half-cylinder nose (radius 10 mm) on 2.5 mm voxels: all of its air within 8 mm is
    margin, also where its skin faces diagonally. (A box opening took skin off such rounded
    skin: measured from there, the margin left out 24 voxels 7.5-7.9 mm from this nose.)"""
    spacing = (2.5, 2.5, 2.5)
    shape = (40, 40, 12)
    i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    face = (j <= 15) | ((i - 20) ** 2 + (j - 15) ** 2 <= 4**2)  # skin at j 15, nose to j 19
    body = np.repeat(face[:, :, None], shape[2], axis=2)
    tissue = body & (np.arange(shape[1]) >= 12)[None, :, None]
    out = with_margin(tissue, body, spacing, MarginParams())
    d = ndimage.distance_transform_edt(~body, sampling=spacing)
    nose = np.zeros(shape, bool)
    nose[12:29, 14:, 2:10] = True  # around the nose, away from the grid's ends
    assert out[nose & ~body & (d <= 8.0)].all()
    assert not out[~body & (d > 8.0)].any()


def test_coarse_cells_never_make_the_margin_thinner_than_min_mm() -> None:
    """On 2 mm cells (4 voxels of 0.5 mm) distances run between cell centres: the margin is
    at least min_mm (here above margin_mm) and ends within its reach plus a cell diagonal."""
    body = _slab((40, 80, 40), skin=30)
    tissue = np.zeros_like(body)
    tissue[10:30, 20:30, 10:30] = True
    spacing = (0.5, 0.5, 0.5)
    params = MarginParams(margin_mm=4.0, cell_mm=2.0, min_mm=5.0)
    assert params.strides(spacing) == [4, 4, 4]
    reach = params.reach_mm(spacing)
    assert reach == pytest.approx(5.0 + 1.5 * np.sqrt(3))  # min_mm + diagonal of 3 voxels
    out = with_margin(tissue, body, spacing, params)
    assert out[tissue].all()
    assert out[20, 30:40, 20].all()  # 5 mm = 10 voxels, no unmasked sliver at j = 30
    beyond = 30 + int(np.ceil((reach + 2.0 * np.sqrt(3)) / 0.5))
    assert not out[20, beyond:, 20].any()


def test_cells_pooled_along_one_axis_keep_the_margin_along_the_others() -> None:
    """A 0.7 x 3 x 3 mm grid is pooled 2 x 1 x 1: only the pooled axis blurs the distance, so
    the margin across the 3 mm voxels is margin_mm (8 mm: two voxels), not a whole cell's
    diagonal more (tuning phantoms with such grids lost up to 0.1 Dice to a thick margin)."""
    body = _slab((60, 40, 20), skin=30)
    tissue = np.zeros_like(body)
    tissue[10:50, 25:30, 5:15] = True
    spacing = (0.7, 3.0, 3.0)
    params = MarginParams()
    assert params.strides(spacing) == [2, 1, 1]
    assert params.reach_mm(spacing) == pytest.approx(8.0)
    out = with_margin(tissue, body, spacing, params)
    assert out[20:40, 30:32, 10].all()  # 3 and 6 mm from the skin
    assert not out[:, 32:, :].any()  # 9 mm


def test_no_margin_and_bad_shapes() -> None:
    body = _slab()
    tissue = np.zeros_like(body)
    tissue[10:30, 20:30, 10:30] = True
    np.testing.assert_array_equal(with_margin(tissue, body, SPACING, MarginParams(0.0)), tissue)
    assert not with_margin(np.zeros_like(body), body, SPACING).any()
    with pytest.raises(ValueError, match="shape"):
        with_margin(tissue, body[:-1], SPACING)


@pytest.mark.parametrize(
    "spacing", [(1.0, 1.0, 1.0), (2.0, 2.0, 2.0), (0.7, 2.1, 1.3), (2.7, 1.3, 2.7), (3.0, 0.5, 0.5)]
)
def test_patient_opening_is_the_ball_of_the_euclidean_distances(spacing) -> None:
    """The opening by erosion and dilation with a ball equals its definition by distance
    transforms: core = farther than the radius from every non-body voxel (the grid's outside
    is body), patient = within the radius of the core's largest part, within the body."""
    from ctadeface.body import largest_component
    from ctadeface.deface.margin import _patient, _radius

    rng = np.random.default_rng(3)
    for thin_mm in (0.5, 1.5, 2.5):
        body = ndimage.gaussian_filter(rng.random((30, 26, 22)), 2.0) > 0.5
        body[:, :3] = True  # body reaching the grid's edge
        radius = _radius(thin_mm, spacing)
        core = ndimage.distance_transform_edt(body, sampling=spacing) > radius
        if core.any():
            core = largest_component(core)
            expected = (ndimage.distance_transform_edt(~core, sampling=spacing) <= radius) & body
        else:
            expected = body
        assert np.array_equal(_patient(body, spacing, thin_mm), expected)


@pytest.mark.parametrize("order", ["C", "F"])
def test_in_place_writes_the_same_margin_into_the_given_mask(order: str) -> None:
    """On coarse cells (0.5 mm voxels, 2 mm cells) and in either memory order."""
    spacing = (0.5, 0.5, 0.5)
    body = np.asarray(_slab((48, 80, 44), skin=50), order=order)
    tissue = np.zeros_like(body)
    tissue[12:36, 30:50, 10:34] = True
    expected = with_margin(tissue, body, spacing)
    given = tissue.copy(order=order)
    out = with_margin(given, body, spacing, in_place=True)
    assert out is given or np.shares_memory(out, given)
    assert np.array_equal(given, expected)
    assert expected.sum() > tissue.sum()  # a margin was added
