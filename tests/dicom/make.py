"""Synthetic DICOM series for the tests, written with pydicom from arrays (nothing from disk),
and a series defaced inside a box mask."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from ctadeface.deface import apply_fill, choose_fill
from ctadeface.dicom import DicomVolume, find_series, load_series, write_defaced
from ctadeface.dicom.series import CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
DOSE_SR = "1.2.840.10008.5.1.4.1.1.88.67"  # X-Ray Radiation Dose SR Storage
#: The one study every test file belongs to.
STUDY = generate_uid()


def _dataset(sop_class: str, path: Path) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = "Test^Phantom"
    ds.PatientID = "PHANTOM"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = STUDY
    ds.StudyDate, ds.StudyTime = "20260101", "120000"
    ds.ReferringPhysicianName = "Doctor^Test"
    ds.StudyID = "S1"
    ds.AccessionNumber = "A1"
    ds.SeriesNumber = 3
    ds.Manufacturer = "test"
    ds.InstitutionName = "Test Hospital"
    ds.KVP = 120
    ds.AcquisitionNumber = 1
    ds.PositionReferenceIndicator = ""
    # identifying attributes of the kinds the Basic Profile removes, and a private one
    ds.PatientAge, ds.PatientWeight = "056Y", 70
    ds.PatientAddress = "1 Test Street"
    ds.OtherPatientIDs = "OTHER-1"
    ds.StudyDescription = "CTA head, Test Hospital"
    ds.OperatorsName = "Tech^One"
    ds.StationName = "CT01"
    ds.DeviceSerialNumber = "SN-123"
    ds.ImageComments = "patient moved"
    ds.AcquisitionDate, ds.ContentDate = "20260101", "20260101"
    ds.private_block(0x0009, "TEST PRIVATE", create=True).add_new(0x01, "LO", "secret")
    return ds


def _pixels(ds: Dataset, plane: np.ndarray) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = plane.shape[-2:]
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = int(plane.dtype == np.int16)
    ds.PixelData = np.ascontiguousarray(plane).tobytes()


def write_series(
    folder: Path,
    data: np.ndarray,
    *,
    spacing: tuple[float, float, float] = (0.8, 0.7, 1.5),
    origin: tuple[float, float, float] = (-90.0, -100.0, 20.0),
    orientation: Sequence[float] = AXIAL,
    slope: float | Sequence[float] = 1.0,
    inter: float | Sequence[float] = -1024.0,
    series_uid: str | None = None,
    modality: str = "CT",
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    shuffle: bool = True,
    transfer_syntax: str | None = None,
    positions: Sequence[Sequence[float]] | None = None,
    frame_of_reference: Sequence[str] | None = None,
    prefix: str = "x",
    padding: int | None = None,
) -> tuple[str, np.ndarray]:
    """One file per slice of ``data`` (columns, rows, slices; int16 or uint16 stored values);
    returns the SeriesInstanceUID and the LPS affine of the array. ``positions`` overrides the
    slice positions (LPS mm); ``shuffle`` gives the files names out of slice order, each
    ``prefix`` and a number."""
    folder.mkdir(parents=True, exist_ok=True)
    uid = series_uid or generate_uid()
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    normal = np.cross(row, col)
    n = data.shape[2]
    slopes = [slope] * n if isinstance(slope, int | float) else list(slope)
    inters = [inter] * n if isinstance(inter, int | float) else list(inter)
    frame_uid = generate_uid()
    names = np.random.default_rng(n).permutation(n) if shuffle else np.arange(n)
    for k in range(n):
        pos = (
            np.asarray(positions[k], float)
            if positions is not None
            else np.asarray(origin) + k * spacing[2] * normal
        )
        ds = _dataset(CT_IMAGE_STORAGE, folder / f"{prefix}{names[k]:04d}")
        ds.Modality = modality
        ds.ImageType = list(image_type)
        ds.SeriesInstanceUID = uid
        ds.SeriesDescription = "test CTA"
        ds.FrameOfReferenceUID = frame_of_reference[k] if frame_of_reference else frame_uid
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [float(v) for v in pos]
        ds.ImageOrientationPatient = [float(v) for v in orientation]
        ds.PixelSpacing = [spacing[1], spacing[0]]  # between rows, between columns
        ds.SliceThickness = spacing[2]
        ds.RescaleSlope, ds.RescaleIntercept = slopes[k], inters[k]
        if padding is not None:
            ds.PixelPaddingValue = padding
        _pixels(ds, data[:, :, k].T)
        if transfer_syntax is not None:
            ds.compress(transfer_syntax)
        ds.save_as(folder / f"{prefix}{names[k]:04d}", enforce_file_format=True)
    affine = np.eye(4)
    affine[:3, 0] = row * spacing[0]
    affine[:3, 1] = col * spacing[1]
    affine[:3, 2] = normal * spacing[2]
    affine[:3, 3] = origin
    return uid, affine


def write_affine_series(folder: Path, data: np.ndarray, affine: np.ndarray, **kw) -> str:
    """``write_series`` of ``data`` on the grid of a RAS+ ``affine`` (k reversed when it points
    against the normal of the i and j axes, as DICOM slices are sorted along the normal);
    returns the SeriesInstanceUID."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    axes = lps[:3, :3] / spacing
    origin = lps[:3, 3]
    if not np.allclose(np.cross(axes[:, 0], axes[:, 1]), axes[:, 2]):
        data = data[:, :, ::-1]
        origin = (lps @ [0.0, 0.0, data.shape[2] - 1.0, 1.0])[:3]
    uid, _ = write_series(
        folder,
        data,
        spacing=tuple(float(v) for v in spacing),
        origin=tuple(float(v) for v in origin),
        orientation=[float(v) for v in (*axes[:, 0], *axes[:, 1])],
        **kw,
    )
    return uid


def write_enhanced(
    path: Path,
    data: np.ndarray,
    *,
    spacing: tuple[float, float, float] = (0.8, 0.7, 1.5),
    origin: tuple[float, float, float] = (-90.0, -100.0, 20.0),
    slopes: Sequence[float] | None = None,
    inter: float = -1024.0,
) -> str:
    """One Enhanced CT (multi-frame) file of ``data`` (columns, rows, slices), axial, frames in
    reverse slice order; ``slopes``: one RescaleSlope per frame (else a shared 1)."""
    ds = _dataset(ENHANCED_CT_IMAGE_STORAGE, path)
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.SeriesInstanceUID = uid = generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    n = data.shape[2]
    ds.NumberOfFrames = n
    shared = Dataset()
    orient = Dataset()
    orient.ImageOrientationPatient = list(AXIAL)
    measures = Dataset()
    measures.PixelSpacing = [spacing[1], spacing[0]]
    measures.SliceThickness = spacing[2]
    shared.PlaneOrientationSequence = DicomSequence([orient])
    shared.PixelMeasuresSequence = DicomSequence([measures])
    if slopes is None:
        transform = Dataset()
        transform.RescaleSlope, transform.RescaleIntercept = 1.0, inter
        shared.PixelValueTransformationSequence = DicomSequence([transform])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    order = list(range(n))[::-1]
    per = []
    for k in order:
        item = Dataset()
        plane = Dataset()
        plane.ImagePositionPatient = [origin[0], origin[1], origin[2] + k * spacing[2]]
        item.PlanePositionSequence = DicomSequence([plane])
        if slopes is not None:
            transform = Dataset()
            transform.RescaleSlope, transform.RescaleIntercept = slopes[k], inter
            item.PixelValueTransformationSequence = DicomSequence([transform])
        per.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per)
    _pixels(ds, np.stack([data[:, :, k].T for k in order]))
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return uid


def write_other(path: Path, sop_class: str, modality: str) -> str:
    """A file of another kind (a dose report, an MR image header); returns its series UID."""
    ds = _dataset(sop_class, path)
    ds.Modality = modality
    ds.SeriesInstanceUID = uid = generate_uid()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return uid


def box_mask(shape: tuple[int, ...]) -> np.ndarray:
    """A box of True (columns, rows, slices) in the first third of the columns, the second
    quarter of the rows, slices 2-5."""
    mask = np.zeros(shape, bool)
    mask[: shape[0] // 3, shape[1] // 4 : shape[1] // 2, 2:6] = True
    return mask


def deface_series(
    source: Path, out: Path, *, key: str = "k", deidentify: bool = False
) -> tuple[DicomVolume, np.ndarray, list[Path]]:
    """The one series under ``source`` defaced inside :func:`box_mask` (air fill) and written
    to ``out``: (the source volume, the mask, the files written)."""
    (series,), _ = find_series(source)
    volume = load_series(series)
    mask = box_mask(volume.image.data.shape)
    defaced = apply_fill(volume.image, mask, choose_fill(volume.image, "air"))
    files = write_defaced(
        volume, defaced, mask, out, key=key, description="face removed", deidentify=deidentify
    )
    return volume, mask, files
