"""ctadeface.dicom.seg: the face mask as a Segmentation object over the defaced series."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest

from ctadeface.dicom.seg import SEGMENT_LABEL, face_segmentation
from tests.dicom.make import deface_series, write_enhanced, write_series


@pytest.mark.parametrize("enhanced", [False, True])
def test_the_seg_object_references_the_defaced_series_and_matches_the_mask(tmp_path, enhanced):
    data = np.random.default_rng(2).integers(-1024, 2000, (64, 48, 9)).astype(np.int16)
    if enhanced:
        write_enhanced(tmp_path / "in" / "ct.dcm", data)
    else:
        write_series(tmp_path / "in", data)
    volume, mask, files = deface_series(tmp_path / "in", tmp_path / "out")
    seg = face_segmentation(volume, files, mask, key="k", version="0")
    seg.save_as(tmp_path / "seg.dcm")
    back = hd.seg.segread(tmp_path / "seg.dcm")
    out = [pydicom.dcmread(f) for f in files]
    assert back.ReferencedSeriesSequence[0].SeriesInstanceUID == out[0].SeriesInstanceUID
    assert back.SeriesInstanceUID not in {out[0].SeriesInstanceUID, volume.series_uid}
    assert back.get_segment_description(1).SegmentLabel == SEGMENT_LABEL
    if enhanced:
        frames = back.get_pixels_by_source_frame(
            out[0].SOPInstanceUID,
            list(range(1, data.shape[2] + 1)),
            segment_numbers=[1],
            assert_missing_frames_are_empty=True,  # empty frames are left out
        )[..., 0]
        slice_of = {s.frame: k for k, s in enumerate(volume.slices)}
        got = np.stack([frames[f].T for f in sorted(slice_of, key=slice_of.get)], axis=2)
    else:
        planes = back.get_pixels_by_source_instance(
            [d.SOPInstanceUID for d in out],
            segment_numbers=[1],
            assert_missing_frames_are_empty=True,
        )[..., 0]
        got = np.stack([p.T for p in planes], axis=2)
    assert np.array_equal(got.astype(bool), mask)


def test_a_series_with_other_slices_than_the_mask_is_refused(tmp_path):
    data = np.random.default_rng(3).integers(-1024, 2000, (32, 24, 9)).astype(np.int16)
    write_series(tmp_path / "in", data)
    volume, mask, files = deface_series(tmp_path / "in", tmp_path / "out")
    with pytest.raises(ValueError, match=r"mask has 9 slices, the series 8 file\(s\)"):
        face_segmentation(volume, files[:8], mask, key="k", version="0")
