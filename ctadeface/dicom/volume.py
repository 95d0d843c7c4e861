"""One CT image series read into the image record the pipeline works on (``io.CTImage``), with
what writing it back as DICOM needs: where each slice came from and its own rescaling.

Geometry comes from ImagePositionPatient, ImageOrientationPatient and PixelSpacing (per frame
for Enhanced CT); slices are sorted along the normal of their plane. A series that cannot be
one regular grid is refused with one line: mixed orientations, missing or duplicate positions,
uneven spacing beyond :data:`SPACING_TOLERANCE_MM` (a missing slice is a gap), several frames
of reference, gantry tilt (unless asked for: :mod:`ctadeface.dicom.tilt`), fewer than
:data:`MIN_SLICES` slices.

Array axes: ``data[i, j, k]`` is column i, row j of slice k (i along the row direction, the
first three numbers of ImageOrientationPatient; k along the normal, slices sorted by position).
The affine maps (i, j, k) to RAS+ mm (DICOM's patient frame is LPS+). Stored values are kept as
stored (int16 or uint16, as PixelRepresentation says); when every slice has the same
RescaleSlope and RescaleIntercept they become the record's ``slope`` and ``inter``; when they
differ, ``data`` holds HU as float32 (slope 1, intercept 0) and each slice keeps its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from ctadeface.dicom.series import Series
from ctadeface.errors import InputError
from ctadeface.io import CTImage

#: Slices closer than this along the normal are the same position (mm).
DUPLICATE_MM = 1e-3
#: A gap between slices may differ from the median gap by this much (mm) before the series is
#: refused as uneven (a missing slice shows as a gap twice the others).
SPACING_TOLERANCE_MM = 0.05
#: Direction cosines of the slices may differ by this much and still be one orientation.
ORIENTATION_TOLERANCE = 1e-4
#: In-plane offsets of the slice origins beyond this (mm) mean a tilted gantry.
TILT_TOLERANCE_MM = 0.05
#: Fewer slices than this are no head volume the model can use.
MIN_SLICES = 8
#: DICOM patient frame (LPS+) to RAS+.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class Slice:
    """Where one slice of the volume came from.

    Attributes:
        path: its file; frame: its index in a multi-frame file (None: one file per slice).
        position: ImagePositionPatient, LPS mm.
        slope, inter: its RescaleSlope and RescaleIntercept (HU = stored * slope + inter).
    """

    path: Path
    frame: int | None
    position: tuple[float, float, float]
    slope: float
    inter: float


@dataclass(frozen=True, eq=False)
class DicomVolume:
    """A CT series as the pipeline's image record, with its slices' sources.

    Attributes:
        image: the record (``path``: the series' first file).
        slices: one per index k of ``image.data``, in that order.
        series_uid: the SeriesInstanceUID; padding: PixelPaddingValue (stored units) or None.
    """

    image: CTImage
    slices: tuple[Slice, ...]
    series_uid: str
    padding: int | None


@dataclass(frozen=True)
class _Frame:
    """One frame's geometry and scaling, before sorting."""

    slice: Slice
    orientation: np.ndarray  # (6,) row then column direction cosines, LPS
    spacing: tuple[float, float]  # PixelSpacing: between rows, between columns (mm)
    frame_of_reference: str


def _floats(value: Any, n: int, what: str, where: Path) -> np.ndarray:
    try:
        out = np.asarray([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        out = np.zeros(0)
    if out.shape != (n,) or not np.isfinite(out).all():
        raise InputError(f"{where}: {what} missing or not {n} numbers")
    return out


def _scaling(item: Any, fallback: Any) -> tuple[float, float]:
    """RescaleSlope and RescaleIntercept of a frame (its own, else ``fallback``'s, else 1, 0)."""
    for source in (item, fallback):
        if source is not None and "RescaleIntercept" in source:
            return float(source.get("RescaleSlope", 1.0) or 1.0), float(source.RescaleIntercept)
    return 1.0, 0.0


def _single_frames(series: Series) -> list[_Frame]:
    import pydicom

    frames = []
    for path in series.files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        slope, inter = _scaling(ds, None)
        position = _floats(ds.get("ImagePositionPatient"), 3, "ImagePositionPatient", path)
        spacing = _floats(ds.get("PixelSpacing"), 2, "PixelSpacing", path)
        frames.append(
            _Frame(
                Slice(path, None, (position[0], position[1], position[2]), slope, inter),
                _floats(ds.get("ImageOrientationPatient"), 6, "ImageOrientationPatient", path),
                (spacing[0], spacing[1]),
                str(ds.get("FrameOfReferenceUID", "")),
            )
        )
    return frames


def _group(ds: Any, index: int, sequence: str) -> Any:
    """Item 0 of ``sequence`` in frame ``index``'s functional group, else in the shared one
    (None: in neither)."""
    per = ds.get("PerFrameFunctionalGroupsSequence")
    shared = ds.get("SharedFunctionalGroupsSequence")
    for group in (per[index] if per and index < len(per) else None, shared[0] if shared else None):
        if group is not None and sequence in group and group[sequence].value:
            return group[sequence].value[0]
    return None


def _get(item: Any, name: str) -> Any:
    return None if item is None else item.get(name)


def _multi_frames(series: Series) -> list[_Frame]:
    import pydicom

    frames = []
    for path in series.files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for index in range(int(ds.get("NumberOfFrames", 1))):
            plane = _group(ds, index, "PlanePositionSequence")
            position = _floats(_get(plane, "ImagePositionPatient"), 3, "ImagePositionPatient", path)
            turn = _group(ds, index, "PlaneOrientationSequence")
            orientation = _floats(
                _get(turn, "ImageOrientationPatient"), 6, "ImageOrientationPatient", path
            )
            measures = _group(ds, index, "PixelMeasuresSequence")
            spacing = _floats(_get(measures, "PixelSpacing"), 2, "PixelSpacing", path)
            scaling = _scaling(_group(ds, index, "PixelValueTransformationSequence"), ds)
            frames.append(
                _Frame(
                    Slice(path, index, (position[0], position[1], position[2]), *scaling),
                    orientation,
                    (spacing[0], spacing[1]),
                    str(ds.get("FrameOfReferenceUID", "")),
                )
            )
    return frames


def check_geometry(
    frames: Sequence[_Frame], name: str, *, tilt: bool = False
) -> tuple[list[_Frame], np.ndarray]:
    """The frames sorted along the normal and the series' LPS affine, or InputError naming
    ``name`` and what is wrong. With ``tilt`` a gantry tilt (slice origins shifting in plane by
    the same step from slice to slice) is accepted: the affine's third column is then the
    tilted step (``ctadeface.dicom.tilt``)."""
    if len(frames) < MIN_SLICES:
        raise InputError(f"{name}: {len(frames)} slice(s), fewer than {MIN_SLICES}")
    if len({f.frame_of_reference for f in frames}) > 1:
        raise InputError(f"{name}: more than one frame of reference (FrameOfReferenceUID)")
    orientation = frames[0].orientation
    worst = max(float(np.abs(f.orientation - orientation).max()) for f in frames)
    if worst > ORIENTATION_TOLERANCE:
        raise InputError(
            f"{name}: mixed slice orientations (direction cosines differ by {worst:.3g})"
        )
    if len({f.spacing for f in frames}) > 1:
        raise InputError(f"{name}: PixelSpacing differs between slices")
    row, col = orientation[:3], orientation[3:]
    normal = np.cross(row, col)
    positions = np.array([f.slice.position for f in frames])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    along, positions = along[order], positions[order]
    gaps = np.diff(along)
    if (gaps < DUPLICATE_MM).any():
        at = float(along[1:][gaps < DUPLICATE_MM][0])
        raise InputError(f"{name}: duplicate slice positions (two slices at {at:.2f} mm)")
    step = float(np.median(gaps))
    off = float(np.abs(gaps - step).max())
    if off > SPACING_TOLERANCE_MM:
        raise InputError(
            f"{name}: uneven slice spacing ({gaps.min():.3f} to {gaps.max():.3f} mm, off the "
            f"median {step:.3f} mm by up to {off:.3f} mm; tolerance {SPACING_TOLERANCE_MM} mm): "
            "a missing slice?"
        )
    in_plane = (positions - positions[0]) @ np.stack([row, col], axis=1)
    shift = float(np.abs(in_plane).max())
    if shift > TILT_TOLERANCE_MM and not tilt:
        raise InputError(
            f"{name}: gantry tilt (slice origins shift by up to {shift:.2f} mm in plane); "
            "--resample-tilt defaces it on an untilted grid"
        )
    linear = np.outer(np.arange(len(positions)), in_plane[-1] / (len(positions) - 1))
    irregular = float(np.abs(in_plane - linear).max())
    if irregular > TILT_TOLERANCE_MM:
        raise InputError(
            f"{name}: slice origins shift irregularly in plane (off a steady tilt by up to "
            f"{irregular:.2f} mm)"
        )
    row_mm, col_mm = frames[0].spacing  # between rows (along the columns), between columns
    affine = np.eye(4)
    affine[:3, 0] = row * col_mm
    affine[:3, 1] = col * row_mm
    affine[:3, 2] = (positions[-1] - positions[0]) / (len(positions) - 1)
    affine[:3, 3] = positions[0]
    return [frames[i] for i in order], affine


def _pixels(frames: Sequence[_Frame]) -> np.ndarray:
    """Stored values, (columns, rows, slices), in the order of ``frames``."""
    import pydicom

    arrays: dict[Path, np.ndarray] = {}
    out: np.ndarray | None = None
    for k, f in enumerate(frames):
        if f.slice.path not in arrays:
            arrays[f.slice.path] = pydicom.dcmread(f.slice.path).pixel_array
        plane = arrays[f.slice.path]
        plane = plane if f.slice.frame is None or plane.ndim == 2 else plane[f.slice.frame]
        if out is None:
            out = np.empty((plane.shape[1], plane.shape[0], len(frames)), dtype=plane.dtype)
        if plane.T.shape != out.shape[:2]:
            raise InputError(
                f"{f.slice.path}: {plane.shape} pixels, the series has {out.shape[1::-1]}"
            )
        out[:, :, k] = plane.T
        if f.slice.frame is None:
            del arrays[f.slice.path]
    assert out is not None
    return out


def load_series(series: Series, *, tilt: bool = False) -> DicomVolume:
    """The series as a :class:`DicomVolume`. Raises InputError (one line) when it cannot be one
    regular grid (``tilt``: a tilted one is accepted, see :func:`check_geometry`), or its pixels
    cannot be read."""
    import pydicom

    name = f"series {series.uid}"
    frames = _multi_frames(series) if series.enhanced else _single_frames(series)
    frames, lps = check_geometry(frames, name, tilt=tilt)
    try:
        data = _pixels(frames)
    except (ValueError, RuntimeError, NotImplementedError, AttributeError) as e:
        raise InputError(f"{name}: cannot read the pixel data ({e})") from e
    first = pydicom.dcmread(frames[0].slice.path, stop_before_pixels=True)
    padding = first.get("PixelPaddingValue")
    scalings = {(f.slice.slope, f.slice.inter) for f in frames}
    if len(scalings) == 1:
        slope, inter = scalings.pop()
    else:  # per-slice scaling: the record holds HU
        hu = np.empty(data.shape, np.float32)
        for k, f in enumerate(frames):
            hu[:, :, k] = data[:, :, k] * f.slice.slope + f.slice.inter
        data, slope, inter = hu, 1.0, 0.0
    affine = LPS_TO_RAS @ lps
    header = nib.Nifti1Header()
    header.set_data_dtype(data.dtype)
    header.set_data_shape(data.shape)
    header.set_sform(affine, code=1)
    header.set_qform(affine, code=1)
    header.set_xyzt_units("mm")
    spacing = tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
    image = CTImage(
        path=frames[0].slice.path,
        data=data,
        affine=affine,
        header=header,
        slope=slope,
        inter=inter,
        spacing=(spacing[0], spacing[1], spacing[2]),
    )
    return DicomVolume(
        image,
        tuple(f.slice for f in frames),
        series.uid,
        None if padding is None else int(padding),
    )
