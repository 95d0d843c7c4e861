"""ctadeface.dicom.deidentify: the Basic Profile on a written series; what a CT image and a
Segmentation must still carry afterwards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from ctadeface.dicom.deidentify import BASIC_PROFILE, CLEAN_VISUAL_FEATURES, PROFILE_TABLE
from ctadeface.dicom.seg import face_segmentation
from tests.dicom.make import deface_series, write_enhanced, write_series

#: Attributes the profile must not leave with the source's value, named here independently of
#: the library's table (PS3.15 Table E.1-1).
IDENTIFYING = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientAge",
    "PatientWeight",
    "PatientAddress",
    "OtherPatientIDs",
    "InstitutionName",
    "ReferringPhysicianName",
    "OperatorsName",
    "StationName",
    "DeviceSerialNumber",
    "StudyDescription",
    "SeriesDescription",
    "ImageComments",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "AcquisitionDate",
    "ContentDate",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "FrameOfReferenceUID",
)

#: CT Image IOD (PS3.3 A.3): the Type 1 (present, not empty) and Type 2 (present) attributes of
#: its mandatory modules: Patient, General Study, General Series, Frame of Reference, General
#: Equipment, General Image, Image Plane, Image Pixel, CT Image, SOP Common.
CT_TYPE1 = (
    "StudyInstanceUID", "Modality", "SeriesInstanceUID", "FrameOfReferenceUID",
    "PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient", "SamplesPerPixel",
    "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
    "PixelRepresentation", "PixelData", "ImageType", "RescaleIntercept", "RescaleSlope",
    "SOPClassUID", "SOPInstanceUID",
)  # fmt: skip
CT_TYPE2 = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber", "SeriesNumber",
    "PositionReferenceIndicator", "Manufacturer", "InstanceNumber", "SliceThickness", "KVP",
    "AcquisitionNumber",
)  # fmt: skip
#: Segmentation IOD (PS3.3 A.51): Patient, General Study, General Series, Segmentation Series,
#: Frame of Reference, General and Enhanced General Equipment, Image Pixel, Segmentation Image,
#: Multi-frame Functional Groups and Dimension, SOP Common.
SEG_TYPE1 = (
    "StudyInstanceUID", "Modality", "SeriesInstanceUID", "SeriesNumber", "FrameOfReferenceUID",
    "Manufacturer", "ManufacturerModelName", "DeviceSerialNumber", "SoftwareVersions",
    "SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated",
    "BitsStored", "HighBit", "PixelRepresentation", "PixelData", "ImageType", "InstanceNumber",
    "ContentLabel", "SegmentationType", "SegmentSequence", "PerFrameFunctionalGroupsSequence",
    "SharedFunctionalGroupsSequence", "NumberOfFrames", "ContentDate", "ContentTime",
    "DimensionOrganizationSequence", "DimensionIndexSequence", "ReferencedSeriesSequence",
    "SOPClassUID", "SOPInstanceUID",
)  # fmt: skip
SEG_TYPE2 = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber", "PositionReferenceIndicator",
    "ContentDescription", "ContentCreatorName",
)  # fmt: skip


def _pairs(volume, files: list[Path]) -> list[tuple[pydicom.Dataset, pydicom.Dataset]]:
    first: dict[Path, int] = {}
    for k, item in enumerate(volume.slices):
        first.setdefault(item.path, k)
    sources = sorted(first, key=first.__getitem__)  # the writer's order: by first slice
    return [(pydicom.dcmread(s), pydicom.dcmread(f)) for s, f in zip(sources, files, strict=True)]


def _profile_tags() -> list[tuple[int, int]]:
    from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector

    table = dicom_anonymization_database_selector(PROFILE_TABLE)["ALL_TAGS"]
    return [tag for tag in table if len(tag) == 2 and tag[0] != 0x0002]


@pytest.fixture(params=["single", "enhanced"])
def series(request, tmp_path):
    data = np.random.default_rng(4).integers(-1024, 2000, (48, 40, 10)).astype(np.int16)
    if request.param == "single":
        write_series(tmp_path / "in", data, slope=1.0, inter=-1024.0)
    else:
        write_enhanced(tmp_path / "in" / "enh.dcm", data)
    return tmp_path / "in"


def test_no_attribute_of_the_profile_keeps_its_value_and_private_ones_are_gone(series, tmp_path):
    volume, _, files = deface_series(series, tmp_path / "out", deidentify=True)
    tags = _profile_tags()
    for source, out in _pairs(volume, files):
        for tag in tags:
            if tag in source and source[tag].value not in (None, "", b""):
                assert tag not in out or out[tag].value != source[tag].value, tag
        for keyword in IDENTIFYING:
            if keyword in source:
                assert out.get(keyword) != source.get(keyword), keyword
        assert not any(element.tag.is_private for element in out.iterall())
        assert out.PatientIdentityRemoved == "YES"
        assert out.LongitudinalTemporalInformationModified == "REMOVED"
        codes = [
            (c.CodeValue, c.CodingSchemeDesignator) for c in out.DeidentificationMethodCodeSequence
        ]
        assert codes == [BASIC_PROFILE[:2], CLEAN_VISUAL_FEATURES[:2]]
        assert all(len(v) <= 64 for v in out.DeidentificationMethod)
        assert "SourceImageSequence" not in out
        assert out.ImageType[0] == "DERIVED" and out.BurnedInAnnotation == "NO"


def test_none_keeps_every_attribute_but_the_uids_and_the_derivation(series, tmp_path):
    volume, _, files = deface_series(series, tmp_path / "out", deidentify=False)
    changed = {
        "SeriesInstanceUID", "SOPInstanceUID", "SeriesDescription", "ImageType",
        "DerivationDescription", "DerivationCodeSequence", "BurnedInAnnotation",
        "SourceImageSequence", "PixelData",
    }  # fmt: skip
    for source, out in _pairs(volume, files):
        for element in source:
            if element.keyword not in changed:
                assert element.tag in out and out[element.tag].value == element.value, element
        assert "PatientIdentityRemoved" not in out


def test_uids_are_consistent_across_series_of_one_study_and_reruns(tmp_path):
    data = np.zeros((32, 32, 9), np.int16)
    write_series(tmp_path / "a", data)
    write_series(tmp_path / "b", data)
    outs = [
        deface_series(tmp_path / name, tmp_path / f"out-{name}{n}", deidentify=True)[2][0]
        for name in "ab"
        for n in (1, 2)
    ]
    first = [pydicom.dcmread(f) for f in outs]
    source = pydicom.dcmread(next((tmp_path / "a").iterdir()))
    assert len({str(ds.StudyInstanceUID) for ds in first}) == 1
    assert first[0].StudyInstanceUID != source.StudyInstanceUID
    assert first[0].SOPInstanceUID == first[1].SOPInstanceUID  # a rerun: the same UIDs
    assert first[0].SeriesInstanceUID != first[2].SeriesInstanceUID
    assert first[0].file_meta.MediaStorageSOPInstanceUID == first[0].SOPInstanceUID


def _missing(ds: pydicom.Dataset, type1: tuple[str, ...], type2: tuple[str, ...]) -> list[str]:
    absent = [k for k in type1 if k not in ds or ds[k].value in (None, "", b"")]
    return absent + [k for k in type2 if k not in ds]


@pytest.mark.parametrize("deidentify", [True, False])
def test_ct_image_and_segmentation_keep_the_attributes_their_iods_require(tmp_path, deidentify):
    data = np.random.default_rng(5).integers(-1024, 2000, (48, 40, 10)).astype(np.int16)
    write_series(tmp_path / "in", data)
    volume, mask, files = deface_series(tmp_path / "in", tmp_path / "out", deidentify=deidentify)
    for f in files:
        assert _missing(pydicom.dcmread(f), CT_TYPE1, CT_TYPE2) == []
    seg = face_segmentation(volume, files, mask, key="k", version="0")
    seg.save_as(tmp_path / "seg.dcm")
    back = pydicom.dcmread(tmp_path / "seg.dcm")
    assert _missing(back, SEG_TYPE1, SEG_TYPE2) == []
    referenced = back.ReferencedSeriesSequence[0].SeriesInstanceUID
    assert referenced == pydicom.dcmread(files[0]).SeriesInstanceUID
    if deidentify:
        assert back.PatientName != "Test^Phantom" and back.PatientID != "PHANTOM"
        assert "PatientAddress" not in back and "InstitutionName" not in back
