"""ctadeface.dicom.volume: a series as the pipeline's image record; geometry refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import JPEG2000Lossless, RLELossless

from ctadeface.dicom import find_series, load_series
from ctadeface.dicom.volume import LPS_TO_RAS, MIN_SLICES, SPACING_TOLERANCE_MM
from ctadeface.errors import InputError
from tests.dicom.make import write_enhanced, write_series

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _stored(dtype: type = np.int16, shape: tuple[int, int, int] = (12, 10, 9)) -> np.ndarray:
    rng = np.random.default_rng(1)
    low = 0 if dtype == np.uint16 else -1024
    return rng.integers(low, low + 3000, shape).astype(dtype)


def _only(folder: Path):
    (series,), _ = find_series(folder)
    return load_series(series)


@pytest.mark.parametrize("dtype", [np.int16, np.uint16])
def test_stored_values_geometry_and_scaling_are_kept(tmp_path, dtype):
    data = _stored(dtype)
    _, lps = write_series(tmp_path, data, slope=0.5, inter=-1024.0, padding=int(data.min()))
    volume = _only(tmp_path)
    assert volume.padding == int(data.min())
    image = volume.image
    assert image.data.dtype == dtype and np.array_equal(image.data, data)
    assert (image.slope, image.inter) == (0.5, -1024.0)
    assert np.allclose(image.affine, LPS_TO_RAS @ lps) and np.allclose(
        image.spacing, (0.8, 0.7, 1.5)
    )
    assert [s.position[2] for s in volume.slices] == pytest.approx(20.0 + 1.5 * np.arange(9))
    assert np.allclose(image.hu(), data * 0.5 - 1024.0)


def test_an_oblique_series_maps_its_axes_to_the_world(tmp_path):
    c, s = np.cos(0.3), np.sin(0.3)
    orientation = (c, s, 0.0, 0.0, 0.0, -1.0)  # coronal-ish, rotated in the axial plane
    data = _stored()
    _, lps = write_series(tmp_path, data, orientation=orientation)
    image = _only(tmp_path).image
    assert np.allclose(image.affine, LPS_TO_RAS @ lps) and np.array_equal(image.data, data)


def test_per_slice_rescaling_gives_hu(tmp_path):
    data = _stored(np.uint16)
    slopes = [1.0 + 0.1 * k for k in range(data.shape[2])]
    write_series(tmp_path, data, slope=slopes, inter=-1024.0)
    volume = _only(tmp_path)
    expect = data * np.asarray(slopes)[None, None, :] - 1024.0
    assert volume.image.data.dtype == np.float32 and (volume.image.slope, volume.image.inter) == (
        1,
        0,
    )
    assert np.allclose(volume.image.data, expect) and [s.slope for s in volume.slices] == slopes


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_compressed_series_read_the_same(tmp_path, syntax):
    data = _stored(np.uint16, shape=(64, 48, 9))  # JPEG 2000 wants a few resolution levels
    write_series(tmp_path, data, transfer_syntax=syntax)
    assert np.array_equal(_only(tmp_path).image.data, data)


@pytest.mark.parametrize("per_frame", [False, True])
def test_enhanced_ct_frames_are_sorted_and_rescaled_per_frame(tmp_path, per_frame):
    data = _stored()
    slopes = [1.0 + 0.25 * k for k in range(data.shape[2])] if per_frame else None
    write_enhanced(tmp_path / "ct.dcm", data, slopes=slopes)
    volume = _only(tmp_path)
    assert [s.frame for s in volume.slices] == list(range(data.shape[2]))[::-1]
    if per_frame:
        assert np.allclose(volume.image.data, data * np.asarray(slopes) - 1024.0)
    else:
        assert np.array_equal(volume.image.data, data) and volume.image.inter == -1024.0


def _positions(n: int, step: float = 1.5) -> list[list[float]]:
    return [[-90.0, -100.0, 20.0 + k * step] for k in range(n)]


def _refused(tmp_path: Path, **kwargs) -> str:
    data = kwargs.pop("data", _stored())
    write_series(tmp_path, data, **kwargs)
    with pytest.raises(InputError) as err:
        _only(tmp_path)
    message = str(err.value)
    assert "\n" not in message and message.startswith("series ")
    return message


def test_a_missing_slice_is_refused_as_uneven_spacing(tmp_path):
    positions = _positions(10)
    del positions[4]
    message = _refused(tmp_path, data=_stored(shape=(12, 10, 9)), positions=positions)
    assert "uneven slice spacing (1.500 to 3.000 mm" in message and "missing slice" in message
    assert f"tolerance {SPACING_TOLERANCE_MM} mm" in message


def test_mixed_orientation_duplicates_tilt_references_and_few_slices_are_refused(tmp_path):
    mixed = tmp_path / "mixed"
    same = {"frame_of_reference": ["1.2.3"] * 5}
    uid, _ = write_series(mixed, _stored(shape=(12, 10, 5)), **same)
    write_series(mixed, _stored(shape=(12, 10, 5)), orientation=(1, 0, 0, 0, 0.8, 0.6),
                 series_uid=uid, origin=(0, 0, 100), prefix="y", **same)  # fmt: skip
    with pytest.raises(InputError, match="mixed slice orientations"):
        _only(mixed)
    positions = _positions(9)
    positions[3] = positions[2]
    assert "duplicate slice positions" in _refused(tmp_path / "dup", positions=positions)
    tilted = [[-90.0, -100.0 + 0.5 * k, 20.0 + 1.5 * k] for k in range(9)]
    assert "gantry tilt" in _refused(tmp_path / "tilt", positions=tilted)
    frames = [f"1.2.3.{k % 2}" for k in range(9)]
    assert "frame of reference" in _refused(tmp_path / "for", frame_of_reference=frames)
    few = _refused(tmp_path / "few", data=_stored(shape=(12, 10, MIN_SLICES - 1)))
    assert f"fewer than {MIN_SLICES}" in few


@pytest.mark.skipif(not (SHARED / "dicom" / "vhp_female_head").is_dir(), reason="no ../shared")
def test_the_visible_human_series_is_the_shared_nifti_voxel_for_voxel():
    import nibabel as nib

    from ctadeface.io import load_ct

    volume = _only(SHARED / "dicom" / "vhp_female_head")
    nifti = load_ct(SHARED / "heads" / "vhp_female_head.nii.gz")
    a = nib.as_closest_canonical(nib.Nifti1Image(volume.image.hu(), volume.image.affine))
    b = nib.as_closest_canonical(nib.Nifti1Image(nifti.hu(), nifti.affine))
    assert np.allclose(a.affine, b.affine) and np.array_equal(
        np.asarray(a.dataobj), np.asarray(b.dataobj)
    )
