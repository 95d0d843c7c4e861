"""DICOM: CT image series found under a folder (:mod:`~ctadeface.dicom.series`), read into the
pipeline's image record with their slices' sources (:mod:`~ctadeface.dicom.volume`), a
defaced series written back file for file (:mod:`~ctadeface.dicom.write`) with UIDs derived
from the source's (:mod:`~ctadeface.dicom.uid`), and the face mask as a Segmentation object
referencing it (:mod:`~ctadeface.dicom.seg`)."""

from ctadeface.dicom.seg import face_segmentation
from ctadeface.dicom.series import Series, Skipped, find_series
from ctadeface.dicom.uid import derived_uid
from ctadeface.dicom.volume import DicomVolume, Slice, load_series
from ctadeface.dicom.write import write_defaced

__all__ = [
    "DicomVolume",
    "Series",
    "Skipped",
    "Slice",
    "derived_uid",
    "face_segmentation",
    "find_series",
    "load_series",
    "write_defaced",
]
