"""ctadeface.segment.localise: the head slab, and that the fast strategy's mask is unchanged
within it."""

from __future__ import annotations

import numpy as np
import pytest

from ctadeface.segment.fast import BOX_MARGIN_MM
from ctadeface.segment.localise import (
    HEAD_SLAB_MM,
    TRUNK_CM2,
    HeadSlab,
    SlabEnd,
    Superior,
    cross_sections,
    find_slab,
    head_slab,
    superior_of,
    superior_of_codes,
)
from tests import SHARED_DATA, TINY_MODEL


def test_superior_axis_of_affines_and_codes():
    assert superior_of(np.diag([1.0, 1.0, 2.0, 1.0])) == Superior(axis=0, sign=1)
    assert superior_of(np.diag([-4.0, 4.0, -4.0, 1.0])) == Superior(axis=0, sign=-1)
    coronal = np.array([[1.0, 0, 0, 0], [0, 0, 3.0, 0], [0, -0.5, 0, 0], [0, 0, 0, 1]])
    assert superior_of(coronal) == Superior(axis=1, sign=-1)
    assert superior_of_codes("RAS") == Superior(axis=0, sign=1)
    assert superior_of_codes("SPL") == Superior(axis=2, sign=1)
    assert superior_of_codes("LIP") == Superior(axis=1, sign=-1)


@pytest.mark.parametrize("sign", [1, -1])
def test_the_slab_keeps_the_top_of_the_body_and_short_scans_whole(sign):
    cells = np.zeros((200, 4, 4), bool)
    cells[10:190] = True  # 180 cells of 4 mm = 720 mm of body
    kept, slab = head_slab(cells, [2, 1, 1], (2.0, 1.0, 1.0), Superior(0, sign))
    along = np.flatnonzero(kept.any(axis=(1, 2)))
    assert len(along) == int(HEAD_SLAB_MM // 4.0) + 1
    assert (along[-1] == 189) if sign > 0 else (along[0] == 10)
    assert slab == HeadSlab(4.0 * len(along), SlabEnd.SLAB)
    short = np.zeros((60, 4, 4), bool)
    short[5:50] = True  # 180 mm
    kept, slab = head_slab(short, [2, 1, 1], (2.0, 1.0, 1.0), Superior(0, sign))
    assert kept is short and slab.end == SlabEnd.SCAN


def _sections(*parts: tuple[float, int]) -> np.ndarray:
    """Cross-sections (cm²) from the top down: (value, cells) runs."""
    return np.concatenate([np.full(n, v) for v, n in parts])


def test_the_slab_ends_above_the_shoulders():
    """Below the head's own depth (HEAD_MM), the first cross-section wider than 1.5 x the
    head's largest ends the slab; one wider within the head's depth (a head holder) does not,
    nor one below HEAD_SLAB_MM."""
    head, neck = (200.0, 40), (110.0, 15)  # 160 mm of head, 60 mm of neck (4 mm cells)
    first, stop, slab = find_slab(_sections(head, neck, (450.0, 60)), 4.0)
    assert (first, stop) == (0, 55) and slab == HeadSlab(220.0, SlabEnd.SHOULDERS)
    assert find_slab(_sections(head, neck, (290.0, 60)), 4.0)[2].end == SlabEnd.SLAB
    holder = _sections((200.0, 10), (400.0, 5), (200.0, 25), neck, (250.0, 60))
    assert find_slab(holder, 4.0)[2].end == SlabEnd.SLAB
    late = _sections(head, (110.0, 50), (450.0, 60))  # widens 360 mm down
    assert find_slab(late, 4.0)[2] == HeadSlab(4.0 * (int(HEAD_SLAB_MM // 4.0) + 1), SlabEnd.SLAB)


def test_a_body_that_begins_in_the_trunk_has_no_slab():
    trunk = _sections((600.0, 5), (800.0, 100))
    first, stop, slab = find_slab(trunk, 4.0)
    assert first == stop == 0 and slab == HeadSlab(0.0, SlabEnd.TRUNK)
    # a small device above the trunk does not hide it; a head beside nothing else is a head
    rod = _sections((3.0, 2), (600.0, 100))
    assert find_slab(rod, 4.0)[2].end == SlabEnd.TRUNK
    head = _sections((TRUNK_CM2 * 0.6, 40), (0.0, 5))
    assert find_slab(head, 4.0)[2].end == SlabEnd.SCAN


@pytest.mark.parametrize("sign", [1, -1])
def test_cross_sections_are_in_cm2_from_the_top_down(sign):
    cells = np.zeros((10, 5, 4), bool)
    cells[2, :2, :] = True  # 8 cells of 2 x 3 mm
    sections = cross_sections(cells, [1, 2, 3], (4.0, 1.0, 1.0), Superior(0, sign))
    assert sections[2 if sign < 0 else 7] == pytest.approx(8 * 6 / 100.0)
    assert sections.sum() == pytest.approx(0.48)


def _tall_scan(
    half_axes: tuple[float, float] = (23.0, 20.0), width: int = 48, neck: int = 0
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """A phantom head (48 x 52 x 44 at 4 mm, k towards the feet; its largest cross-section
    222 cm²) above ``neck`` slices of a neck (a 52 mm cylinder, 85 cm²) and 90 slices of trunk
    (an elliptic section of ``half_axes`` cells), on a grid ``width`` cells wide along i: an
    arch-to-vertex-like scan over 500 mm tall."""
    from tests.test_robustness import phantom_hu

    head, affine = phantom_hu(1)
    pad = (width - head.shape[0]) // 2
    head = np.pad(head, ((pad, width - head.shape[0] - pad), (0, 0), (0, 0)), constant_values=-1000)
    i, j = np.meshgrid(np.arange(width) - width / 2, np.arange(52) - 26.0, indexing="ij")

    def ellipse(a: float, b: float, n: int) -> np.ndarray:
        section = np.where((i / a) ** 2 + (j / b) ** 2 < 1, 40.0, -1000.0).astype(np.float32)
        return np.repeat(section[:, :, None], n, axis=2)

    trunk = ellipse(*half_axes, 90)
    trunk[width // 2 - 4 : width // 2 + 4, 30:36, :] = 700.0  # a spine
    return np.concatenate([head, ellipse(6.5, 6.5, neck), trunk], axis=2), affine, (4.0, 4.0, 4.0)


@pytest.mark.parametrize(
    ("half_axes", "width", "neck", "end"),
    [((23.0, 20.0), 48, 0, SlabEnd.SLAB), ((34.0, 22.0), 72, 15, SlabEnd.SHOULDERS)],
    ids=["narrow trunk", "shoulders"],
)
def test_a_tall_scan_gets_the_same_mask_in_the_slab_and_none_below(
    tmp_path, half_axes, width, neck, end
):
    """The slab ends 320 mm below the top of the body, or above the first slice wider than
    1.5 x the head. Down to the network's margin below the slab, across the whole field of view,
    the mask is the one segmented over the whole field of view (which also runs the network on
    the shoulders), and so is the post-processed mask above the slab's end; below the margin,
    nothing."""
    from ctadeface.deface import postprocess
    from ctadeface.segment import FaceSegmenter
    from ctadeface.segment.models import resolve_model

    hu, affine, spacing = _tall_scan(half_axes, width, neck)
    bottom, slab = _slab_of(hu, affine, spacing)
    assert slab.end == end
    body = hu > -500
    top = int(np.flatnonzero(body.any(axis=(0, 1)))[0])  # k grows to the feet
    if end == SlabEnd.SLAB:
        assert bottom == top + int(HEAD_SLAB_MM // 4.0) + 1
    else:
        assert bottom == hu.shape[2] - 90  # the trunk's first slice
    spec = resolve_model(str(TINY_MODEL / "Dataset900_TinyFace"), tmp_path / "cache")
    segmenter = FaceSegmenter(spec, device="cpu", precision="fp32")
    everywhere = segmenter.predict(hu, spacing)  # no affine: no slab
    within = segmenter.predict(hu, spacing, affine=affine)
    reach = bottom + int(np.ceil(BOX_MARGIN_MM / 4.0))
    assert everywhere[:, :, :reach].any()
    np.testing.assert_array_equal(within[:, :, :reach], everywhere[:, :, :reach])
    assert not within[:, :, reach:].any()
    post = [postprocess(mask, hu, spacing)[:, :, :bottom] for mask in (everywhere, within)]
    np.testing.assert_array_equal(post[1], post[0])


def _slab_of(
    hu: np.ndarray, affine: np.ndarray, spacing: tuple[float, ...]
) -> tuple[int, HeadSlab]:
    """The slab of a scan in HU, and the stored index where it ends along the superior axis when
    that index grows to the feet (as in ``_tall_scan``)."""
    from ctadeface.body import body_cells
    from ctadeface.hu import BODY_HU

    cells, steps = body_cells(hu, spacing, BODY_HU) or (np.zeros((1, 1, 1), bool), [1, 1, 1])
    up = superior_of(affine)
    axis = 2 - up.axis  # the superior axis of the stored (i, j, k) array
    sections = cross_sections(cells, steps, spacing, Superior(axis=axis, sign=up.sign))
    _, stop, slab = find_slab(sections, steps[axis] * spacing[axis])
    return stop * steps[axis], slab


def test_a_scan_that_begins_in_the_trunk_is_not_segmented(tmp_path, caplog):
    from ctadeface.segment import FaceSegmenter
    from ctadeface.segment.models import resolve_model

    # a chest field of view: 520 x 400 mm, a 400 x 240 mm body with lungs and a spine, 120 mm
    i, j = np.meshgrid(np.arange(130) - 65.0, np.arange(100) - 50.0, indexing="ij")
    section = np.where((i / 50.0) ** 2 + (j / 30.0) ** 2 < 1, 40.0, -1000.0)
    for side in (-1, 1):
        section[((i - side * 21) / 15) ** 2 + (j / 18) ** 2 < 1] = -850.0
    section[(i / 4) ** 2 + ((j + 22) / 4) ** 2 < 1] = 700.0
    trunk = np.repeat(section[:, :, None], 30, axis=2).astype(np.float32)
    spacing = (4.0, 4.0, 4.0)
    affine = np.diag([-4.0, -4.0, -4.0, 1.0])  # LPI: k grows to the feet
    assert _slab_of(trunk, affine, spacing)[1].end == SlabEnd.TRUNK
    spec = resolve_model(str(TINY_MODEL / "Dataset900_TinyFace"), tmp_path / "cache")
    segmenter = FaceSegmenter(spec, device="cpu", precision="fp32")
    assert segmenter.predict(trunk, spacing).any()  # the network would mark something
    with caplog.at_level("INFO"):
        assert not segmenter.predict(trunk, spacing, affine=affine).any()
    assert "begins in the trunk" in caplog.text


HEADS = sorted((SHARED_DATA / "heads").glob("*.nii.gz")) if SHARED_DATA.is_dir() else []


@pytest.mark.skipif(not HEADS, reason="no ../shared/data")
@pytest.mark.parametrize("path", HEADS, ids=lambda p: p.name.split(".")[0])
def test_the_shared_heads_keep_their_masks(path, tmp_path):
    """Every shared head lies within the slab: the scan ends first, or (the Visible Human head,
    224 mm down to its shoulders) the default model's post-processed mask over the whole field
    of view is the slab's, to the voxel."""
    from ctadeface.io import load_ct

    image = load_ct(path)
    hu = image.hu()
    end = _slab_of(hu, image.affine, image.spacing)[1].end
    assert end in (SlabEnd.SCAN, SlabEnd.SHOULDERS)
    if end == SlabEnd.SCAN:
        return
    masks = _post_processed_without_and_with_the_slab(image, hu, tmp_path)
    assert masks[0].any()
    np.testing.assert_array_equal(masks[1], masks[0])


def _post_processed_without_and_with_the_slab(image, hu: np.ndarray, tmp_path) -> list[np.ndarray]:
    """The default model's post-processed masks of ``image`` (``hu``: its HU) segmented over the
    whole field of view, then within the head slab."""
    from ctadeface.deface import postprocess
    from ctadeface.segment import FaceSegmenter
    from ctadeface.segment.models import resolve_model

    segmenter = FaceSegmenter(resolve_model("open", tmp_path / "cache"), device="cpu")
    return [
        postprocess(
            segmenter.predict(hu, image.spacing, affine=image.affine, slab=slab),
            hu,
            image.spacing,
        )
        for slab in (False, True)
    ]


OPENKBP = sorted((SHARED_DATA / "openkbp").glob("*.nii.gz")) if SHARED_DATA.is_dir() else []


#: OpenKBP CTs cut at the shoulders whose masks near the slab's end depend on the network's region
#: reaching across the whole field of view there (air above the shoulders)
NEAR_THE_END = ["train_pt43", "train_pt147", "train_pt162"]


@pytest.mark.skipif(not OPENKBP, reason="no ../shared/data/openkbp")
@pytest.mark.parametrize("name", NEAR_THE_END)
def test_openkbp_cts_cut_at_the_shoulders_keep_their_masks_above_the_end(name, tmp_path):
    """Above the slab's end the default model's post-processed mask is the one over the whole
    field of view, to the voxel (``bench/results/localise.md`` does this for every shared CT)."""
    from ctadeface.io import load_ct

    image = load_ct(SHARED_DATA / "openkbp" / f"{name}.nii.gz")
    hu = image.hu()
    bottom, slab = _slab_of(hu, image.affine, image.spacing)
    assert slab.end == SlabEnd.SHOULDERS
    masks = _post_processed_without_and_with_the_slab(image, hu, tmp_path)
    above = _above(bottom, image.affine, hu.shape)
    assert masks[0][above].any()
    np.testing.assert_array_equal(masks[1][above], masks[0][above])


def _above(stop: int, affine: np.ndarray, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """The stored slices above the slab's end (``stop`` as ``_slab_of`` gives it, for a scan
    whose index grows to the feet)."""
    up = superior_of(affine)
    assert up.sign < 0, "the superior axis' index must grow to the feet"
    return tuple(slice(0, stop) if a == 2 - up.axis else slice(None) for a in range(3))


@pytest.mark.skipif(not OPENKBP, reason="no ../shared/data/openkbp")
def test_of_the_openkbp_cts_only_the_one_without_a_head_begins_in_the_trunk():
    """train_pt38's field of view holds the shoulders and upper chest only (a rod of the
    immobilisation device above them); every other OpenKBP CT begins at the head or face."""
    from ctadeface.io import load_ct

    trunk = []
    for path in OPENKBP:
        image = load_ct(path)
        if _slab_of(image.hu(), image.affine, image.spacing)[1].end == SlabEnd.TRUNK:
            trunk.append(path.name)
    assert trunk == ["train_pt38.nii.gz"]
