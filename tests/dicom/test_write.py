"""ctadeface.dicom.write: the defaced series, changed only inside the mask, as a new series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, RLELossless

from ctadeface.dicom import derived_uid, find_series, load_series
from ctadeface.dicom.write import DERIVATION_CODE, DESCRIPTION_SUFFIX
from tests.dicom.make import deface_series, write_enhanced, write_series


def _stored(dtype: type = np.int16, shape: tuple[int, int, int] = (64, 48, 9)) -> np.ndarray:
    low = 0 if dtype == np.uint16 else -1024
    return np.random.default_rng(2).integers(low, low + 3000, shape).astype(dtype)


def _read_back(folder: Path):
    (series,), _ = find_series(folder)
    return load_series(series)


@pytest.mark.parametrize("syntax", [None, RLELossless, JPEG2000Lossless])
@pytest.mark.parametrize("dtype", [np.int16, np.uint16])
def test_only_masked_voxels_change_and_the_transfer_syntax_stays(tmp_path, dtype, syntax):
    data = _stored(dtype)
    write_series(tmp_path / "in", data, slope=0.5, inter=-1024.0, transfer_syntax=syntax)
    source, mask, files = deface_series(tmp_path / "in", tmp_path / "out")
    back = _read_back(tmp_path / "out")
    assert back.image.data.dtype == dtype and np.allclose(back.image.affine, source.image.affine)
    assert np.array_equal(back.image.data[~mask], data[~mask])  # bit-identical outside
    air = source.image.to_stored(-1000.0)
    assert np.all(back.image.data[mask] == np.clip(np.rint(air), np.iinfo(dtype).min, None))
    first = pydicom.dcmread(files[0])
    expect = syntax or pydicom.dcmread(source.slices[0].path).file_meta.TransferSyntaxUID
    assert first.file_meta.TransferSyntaxUID == expect and len(files) == data.shape[2]


def test_new_derived_uids_and_the_attributes_of_a_derived_image(tmp_path):
    write_series(tmp_path / "in", _stored())
    source, _, files = deface_series(tmp_path / "in", tmp_path / "out")
    out = [pydicom.dcmread(f) for f in files]
    src = [pydicom.dcmread(s.path) for s in source.slices]
    assert len({d.SeriesInstanceUID for d in out}) == 1
    assert out[0].SeriesInstanceUID == derived_uid(source.series_uid, "k") != source.series_uid
    assert {d.SOPInstanceUID for d in out}.isdisjoint(d.SOPInstanceUID for d in src)
    assert all(d.file_meta.MediaStorageSOPInstanceUID == d.SOPInstanceUID for d in out)
    d = out[0]
    assert d.ImageType[0] == "DERIVED" and d.BurnedInAnnotation == "NO"
    assert d.SeriesDescription == "test CTA" + DESCRIPTION_SUFFIX
    code = d.DerivationCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == DERIVATION_CODE
    assert d.SourceImageSequence[0].ReferencedSOPInstanceUID == src[0].SOPInstanceUID
    assert d.PatientID == src[0].PatientID  # nothing else is touched here
    _, _, again = deface_series(tmp_path / "in", tmp_path / "again")
    assert [pydicom.dcmread(f).SOPInstanceUID for f in again] == [x.SOPInstanceUID for x in out]
    _, _, other = deface_series(tmp_path / "in", tmp_path / "other", key="other settings")
    assert pydicom.dcmread(other[0]).SeriesInstanceUID != d.SeriesInstanceUID


def test_per_slice_rescaling_and_padding_are_honoured(tmp_path):
    data = _stored(np.uint16)
    data[0, :, :] = 0  # the padding value: outside the field of view
    slopes = [1.0 + 0.5 * k for k in range(data.shape[2])]
    write_series(tmp_path / "in", data, slope=slopes, inter=-1024.0, padding=0)
    _, mask, files = deface_series(tmp_path / "in", tmp_path / "out")
    back = [pydicom.dcmread(f) for f in files]
    for k, ds in enumerate(back):
        plane = ds.pixel_array.T
        inside = mask[:, :, k] & (data[:, :, k] != 0)
        assert np.array_equal(plane[~inside], data[:, :, k][~inside])
        air = np.rint((-1000.0 + 1024.0) / slopes[k])
        assert np.all(plane[inside] == air) and float(ds.RescaleSlope) == slopes[k]


def test_enhanced_ct_is_written_as_one_multiframe_file(tmp_path):
    data = _stored()
    write_enhanced(tmp_path / "in" / "ct.dcm", data)
    _, mask, files = deface_series(tmp_path / "in", tmp_path / "out")
    assert len(files) == 1
    back = _read_back(tmp_path / "out")
    assert np.array_equal(back.image.data[~mask], data[~mask])
    assert int(pydicom.dcmread(files[0]).NumberOfFrames) == data.shape[2]
