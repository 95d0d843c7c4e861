"""ctadeface.segment.localise: the head slab, and that the fast strategy's mask is unchanged
within it."""

from __future__ import annotations

import numpy as np
import pytest

from ctadeface.segment.fast import BOX_MARGIN_MM
from ctadeface.segment.localise import (
    HEAD_SLAB_MM,
    Superior,
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
    kept = head_slab(cells, [2, 1, 1], (2.0, 1.0, 1.0), Superior(0, sign))
    along = np.flatnonzero(kept.any(axis=(1, 2)))
    assert len(along) == int(HEAD_SLAB_MM // 4.0) + 1
    assert (along[-1] == 189) if sign > 0 else (along[0] == 10)
    short = np.zeros((60, 4, 4), bool)
    short[5:50] = True  # 180 mm
    assert head_slab(short, [2, 1, 1], (2.0, 1.0, 1.0), Superior(0, sign)) is short


def _tall_scan() -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """A phantom head (48 x 52 x 44 at 4 mm, k towards the feet) above 90 slices of trunk:
    a 536 mm arch-to-vertex-like scan."""
    from tests.test_robustness import phantom_hu

    head, affine = phantom_hu(1)
    i, j = np.meshgrid(np.arange(48) - 24.0, np.arange(52) - 26.0, indexing="ij")
    section = np.where((i / 23.0) ** 2 + (j / 20.0) ** 2 < 1, 40.0, -1000.0).astype(np.float32)
    trunk = np.repeat(section[:, :, None], 90, axis=2)
    trunk[20:28, 30:36, :] = 700.0  # a spine
    return np.concatenate([head, trunk], axis=2), affine, (4.0, 4.0, 4.0)


def test_a_tall_scan_gets_the_same_mask_in_the_slab_and_none_below(tmp_path):
    from ctadeface.segment import FaceSegmenter
    from ctadeface.segment.models import resolve_model

    hu, affine, spacing = _tall_scan()
    spec = resolve_model(str(TINY_MODEL / "Dataset900_TinyFace"), tmp_path / "cache")
    segmenter = FaceSegmenter(spec, device="cpu", precision="fp32")
    everywhere = segmenter.predict(hu, spacing)  # no affine: no slab
    slab = segmenter.predict(hu, spacing, affine=affine)
    top = int(np.flatnonzero((hu > -500).any(axis=(0, 1)))[0])  # k grows to the feet
    bottom = top + int(HEAD_SLAB_MM // 4.0)
    assert everywhere[:, :, :bottom].any()
    assert np.array_equal(slab[:, :, :bottom], everywhere[:, :, :bottom])
    reach = bottom + int(np.ceil(BOX_MARGIN_MM / 4.0)) + 2
    assert not slab[:, :, reach:].any()


HEADS = sorted((SHARED_DATA / "heads").glob("*.nii.gz")) if SHARED_DATA.is_dir() else []


@pytest.mark.skipif(not HEADS, reason="no ../shared/data")
@pytest.mark.parametrize("path", HEADS, ids=lambda p: p.name.split(".")[0])
def test_the_shared_heads_lie_within_the_slab(path):
    """The slab leaves every shared head whole, so its mask is what it was."""
    import nibabel as nib

    img = nib.load(path)
    up = superior_of(img.affine)
    stored_axis = 2 - up.axis
    extent = img.shape[stored_axis] * float(np.linalg.norm(img.affine[:3, stored_axis]))
    assert extent < HEAD_SLAB_MM
