"""DICOM in: CT image series found under a folder (:mod:`~ctadeface.dicom.series`) and read
into the pipeline's image record with their slices' sources (:mod:`~ctadeface.dicom.volume`)."""

from ctadeface.dicom.series import Series, Skipped, find_series
from ctadeface.dicom.volume import DicomVolume, Slice, load_series

__all__ = ["DicomVolume", "Series", "Skipped", "Slice", "find_series", "load_series"]
