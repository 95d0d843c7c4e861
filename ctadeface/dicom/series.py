"""The CT image series under a folder: every DICOM file found (any depth, any name), grouped by
SeriesInstanceUID; what is not a CT image series (localizers, dose reports, secondary captures,
other modalities, DICOMDIR) is listed with the reason it was left out."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

#: SOP classes of CT images: one file per slice, and enhanced (multi-frame).
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
CT_IMAGE_CLASSES = (CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE)
#: The media storage SOP class of a DICOMDIR.
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
#: The attributes read to sort files into series (pixel data is not read).
HEADER_TAGS = (
    "SOPClassUID",
    "Modality",
    "SeriesInstanceUID",
    "SeriesDescription",
    "ImageType",
    "SeriesNumber",
)


@dataclass(frozen=True)
class Series:
    """The files of one CT image series.

    Attributes:
        uid: its SeriesInstanceUID.
        files: its files, sorted by path (their slice order is read with the pixels).
        description: SeriesDescription ("" when absent).
        enhanced: the files are Enhanced CT (multi-frame).
        number: SeriesNumber (None when absent).
    """

    uid: str
    files: tuple[Path, ...]
    description: str
    enhanced: bool
    number: int | None = None


@dataclass(frozen=True)
class Skipped:
    """Something found under the folder and left out: a series (by UID) or a file, and why."""

    what: str
    reason: str


def _files(root: Path) -> Iterator[Path]:
    """Every regular file under ``root`` (or ``root`` itself), sorted, hidden ones left out."""
    if root.is_file():
        yield root
        return
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if not name.startswith("."):
                yield Path(folder) / name


def _sop_name(uid: str) -> str:
    from pydicom.uid import UID

    name = UID(uid).name
    return name if name and name != uid else f"SOP class {uid}"


def _number(ds: object) -> int | None:
    """SeriesNumber as an integer, None when absent or not one."""
    try:
        return int(getattr(ds, "SeriesNumber", None) or 0) or None
    except (TypeError, ValueError):
        return None


def find_series(root: Path) -> tuple[list[Series], list[Skipped]]:
    """The CT image series under ``root`` (a folder, or one file), and what was left out.

    Files that are not DICOM are left out silently but counted in one :class:`Skipped` entry;
    series are left out as a whole by their first file's SOP class, modality and image type.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    groups: dict[str, list[Path]] = {}
    first: dict[str, pydicom.FileDataset] = {}
    skipped: list[Skipped] = []
    not_dicom = 0
    for path in _files(Path(root)):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(HEADER_TAGS))
        except (InvalidDicomError, OSError, ValueError, EOFError):
            not_dicom += 1
            continue
        media = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", ""))
        if media == DICOMDIR_CLASS:
            skipped.append(Skipped(str(path), "DICOMDIR (the files are found by walking)"))
            continue
        uid = str(ds.get("SeriesInstanceUID", ""))
        if not uid:
            skipped.append(Skipped(str(path), "no SeriesInstanceUID"))
            continue
        groups.setdefault(uid, []).append(path)
        first.setdefault(uid, ds)
    series = []
    for uid, paths in groups.items():
        ds = first[uid]
        sop = str(ds.get("SOPClassUID", ""))
        modality = str(ds.get("Modality", ""))
        image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
        if sop not in CT_IMAGE_CLASSES:
            reason = f"{_sop_name(sop)} (modality {modality or 'unknown'}), not a CT image"
        elif modality != "CT":
            reason = f"modality {modality or 'unknown'}, not CT"
        elif "LOCALIZER" in image_type:
            reason = "localizer (ImageType LOCALIZER)"
        else:
            description = str(ds.get("SeriesDescription", ""))
            enhanced = sop == ENHANCED_CT_IMAGE_STORAGE
            files = tuple(sorted(paths))
            series.append(Series(uid, files, description, enhanced, _number(ds)))
            continue
        skipped.append(Skipped(f"series {uid} ({len(paths)} file(s))", reason))
    if not_dicom:
        skipped.append(Skipped(str(root), f"{not_dicom} file(s) that are not DICOM"))
    return sorted(series, key=lambda s: s.uid), skipped
