"""ctadeface.deface.fill: fill values per policy, in stored units; voxels outside the mask
unchanged."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctadeface.deface.fill import apply_fill, background_air, choose_fill, percentile
from ctadeface.hu import AIR_HU
from ctadeface.io import CTImage


def _image(data: np.ndarray, slope: float = 1.0, inter: float = 0.0) -> CTImage:
    return CTImage(
        path=Path("x.nii.gz"),
        data=data,
        affine=np.eye(4),
        header=nib.Nifti1Header(),
        slope=slope,
        inter=inter,
        spacing=(1.0, 1.0, 1.0),
    )


def _head(rng: np.random.Generator, dtype=np.int16, slope=1.0, inter=0.0) -> CTImage:
    hu = rng.normal(-1000, 10, size=(20, 20, 20))
    hu[5:15, 5:15, 5:15] = rng.normal(40, 5, size=(10, 10, 10))
    stored = (hu - inter) / slope
    return _image(np.rint(stored).astype(dtype) if dtype != np.float32 else stored.astype(dtype),
                  slope, inter)  # fmt: skip


def test_p10_matches_percentile_of_hu_for_scaled_data():
    rng = np.random.default_rng(1)
    img = _head(rng, np.uint16, slope=0.5, inter=-1024.0)
    fill = choose_fill(img, "p10")
    assert fill.value_hu == pytest.approx(np.percentile(img.hu().astype(np.float64), 10))
    assert fill.stored_value == np.rint((fill.value_hu + 1024.0) / 0.5)


def test_air_is_minus_1000_hu_in_stored_units_and_clipped():
    img = _head(np.random.default_rng(2), np.int16, slope=1.0, inter=-1024.0)
    fill = choose_fill(img, "air")
    assert fill.value_hu == AIR_HU and fill.stored_value == 24.0
    u8 = _image(np.zeros((4, 4, 4), np.uint8))
    assert choose_fill(u8, "air").stored_value == 0  # -1000 is below uint8's range: clipped


def test_noise_matches_background_air_and_is_reproducible():
    rng = np.random.default_rng(3)
    img = _head(rng, np.float32)
    mean, std = background_air(img)
    assert mean == pytest.approx(-1000, abs=1.0) and std == pytest.approx(10, rel=0.1)
    mask = np.zeros(img.data.shape, bool)
    mask[:, :, :10] = True
    fill = choose_fill(img, "noise")
    a = apply_fill(img, mask, fill, seed=7)
    b = apply_fill(img, mask, fill, seed=7)
    np.testing.assert_array_equal(a, b)
    assert a[mask].std() == pytest.approx(std, rel=0.2)
    assert a[mask].mean() == pytest.approx(mean, abs=2.0)


def test_background_air_ignores_fov_padding():
    data = np.full((20, 20, 20), -3024, np.int16)
    data[2:18, 2:18, 2:18] = -1000
    mean, std = background_air(_image(data))
    assert mean == -1000.0 and std == 0.0


@pytest.mark.parametrize("policy", ["p10", "air", "noise"])
@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.float32, np.uint8])
def test_only_masked_voxels_change_and_dtype_is_kept(policy, dtype):
    rng = np.random.default_rng(4)
    if dtype == np.uint8:
        img = _image(rng.integers(0, 255, (16, 16, 16)).astype(np.uint8), 12.7, -1076.2)
    elif dtype == np.uint16:
        img = _head(rng, dtype, 1.0, -1024.0)
    else:
        img = _head(rng, dtype)
    before = img.data.copy()
    mask = rng.random(img.data.shape) < 0.3
    out = apply_fill(img, mask, choose_fill(img, policy), seed=0)
    assert out.dtype == img.data.dtype
    np.testing.assert_array_equal(out[~mask], before[~mask])
    np.testing.assert_array_equal(img.data, before)  # the source array is not modified
    assert np.all(out[mask] * img.slope + img.inter < 0)  # face replaced by air-like values


def test_mask_shape_must_match():
    img = _image(np.zeros((4, 4, 4), np.int16))
    with pytest.raises(ValueError, match="shape"):
        apply_fill(img, np.zeros((4, 4, 5), bool), choose_fill(img, "air"))


@settings(max_examples=60, deadline=None)
@given(
    dtype=st.sampled_from(["int16", "uint8", ">i2", "int8", "uint16"]),
    values=st.lists(st.integers(-40000, 70000), min_size=1, max_size=300),
    q=st.floats(0, 100),
    fortran=st.booleans(),
)
def test_percentile_from_histogram_equals_numpy(dtype, values, q, fortran) -> None:
    info = np.iinfo(np.dtype(dtype))
    data = np.clip(np.array(values), info.min, info.max).astype(dtype)
    cube = np.resize(data, (len(values), 1, 2))
    cube = np.asfortranarray(cube) if fortran else cube
    # numpy's own percentile of small integers overflows between far-apart values; compare
    # with the percentile of the same values as float64
    expected = float(np.percentile(cube.astype(np.float64), q))
    assert percentile(cube, q) == pytest.approx(expected, abs=1e-6)


def test_percentile_of_floats_is_numpy() -> None:
    data = np.random.default_rng(0).normal(size=(5, 6, 7)).astype(np.float32)
    assert percentile(data, 10) == float(np.percentile(data, 10))


def test_apply_fill_in_place_fills_the_source_array() -> None:
    image = _image(np.arange(24, dtype=np.int16).reshape(2, 3, 4))
    mask = np.zeros((2, 3, 4), bool)
    mask[0, 0, :2] = True
    fill = choose_fill(image, "air")
    copy = apply_fill(image, mask, fill)
    assert image.data[0, 0, 0] == 0 and copy[0, 0, 0] == -1000
    same = apply_fill(image, mask, fill, in_place=True)
    assert same is image.data and np.array_equal(same, copy)


def test_apply_fill_copies_in_the_source_memory_layout() -> None:
    # NIfTI arrays are Fortran-ordered; a C-ordered copy of a CT would transpose it (~1 s)
    source = np.asfortranarray(np.arange(60, dtype=np.int16).reshape(3, 4, 5))
    image = _image(source)
    mask = np.zeros(source.shape, bool)
    mask[1, 2, 3] = True
    out = apply_fill(image, mask, choose_fill(image, "air"))
    assert out.flags.f_contiguous and out is not source
    assert np.array_equal(out[~mask], source[~mask]) and out[1, 2, 3] == -1000
