"""ctadeface.dicom.series: CT image series found under a folder, the rest listed with why."""

from __future__ import annotations

import numpy as np

from ctadeface.dicom import find_series
from tests.dicom.make import DOSE_SR, write_enhanced, write_other, write_series

MR = "1.2.840.10008.5.1.4.1.1.4"


def test_two_series_in_one_folder_beside_a_localizer_a_dose_report_and_other_files(tmp_path):
    data = np.zeros((6, 5, 8), np.int16)
    a, _ = write_series(tmp_path / "mixed", data)
    b, _ = write_series(tmp_path / "mixed", data, prefix="y")  # the same folder
    write_series(
        tmp_path / "deep" / "er" / "scout", data, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER")
    )
    write_other(tmp_path / "dose.dcm", DOSE_SR, "SR")
    write_other(tmp_path / "mr" / "1", MR, "MR")
    e = write_enhanced(tmp_path / "enhanced.dcm", data)
    (tmp_path / "notes.txt").write_text("not DICOM")
    series, skipped = find_series(tmp_path)
    assert [s.uid for s in series] == sorted([a, b, e])
    assert {s.uid: len(s.files) for s in series} == {a: 8, b: 8, e: 1}
    assert [s.enhanced for s in series if s.uid == e] == [True]
    reasons = " | ".join(f"{k.what}: {k.reason}" for k in skipped)
    assert (
        "localizer" in reasons
        and "Dose SR" in reasons
        and "(modality MR), not a CT image" in reasons
    )
    assert "1 file(s) that are not DICOM" in reasons and len(skipped) == 4


def test_one_file_is_a_series_too(tmp_path):
    data = np.zeros((4, 4, 8), np.int16)
    uid = write_enhanced(tmp_path / "one.dcm", data)
    series, skipped = find_series(tmp_path / "one.dcm")
    assert [s.uid for s in series] == [uid] and skipped == []
