"""A defaced series written as a new DICOM series, file for file like its source.

Each source file is read in full and written again with only this changed:

- pixel data: the stored value of every voxel outside the mask bit-identical; inside the mask
  the defaced value converted to that slice's (or frame's) own rescaling, rounded and clipped
  to the stored type; PixelPaddingValue voxels never change. The source's transfer syntax is
  kept (compressed ones are re-encoded losslessly with pydicom's encoders);
- SeriesInstanceUID and SOPInstanceUID: derived UIDs (:func:`ctadeface.dicom.uid.derived_uid`
  of the source's UIDs and the caller's key), so a rerun with the same settings writes the same
  UIDs;
- SeriesDescription gets :data:`DESCRIPTION_SUFFIX`; ImageType's first value ``DERIVED``;
  DerivationDescription and DerivationCodeSequence (DCM 113047 "Pixel by pixel mask");
  BurnedInAnnotation ``NO``; SourceImageSequence references the source instance (not when
  de-identifying: the profile removes it).

Nothing else of the source's attributes is touched, unless ``deidentify`` asks for the Basic
Profile (:mod:`ctadeface.dicom.deidentify`), applied before the changes above.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ctadeface.dicom.deidentify import deidentify as basic_profile
from ctadeface.dicom.uid import derived_uid
from ctadeface.dicom.volume import DicomVolume, Slice

#: Added to the source's SeriesDescription.
DESCRIPTION_SUFFIX = " (defaced)"
#: DerivationCodeSequence's code (DICOM CID 7203, Image Derivation).
DERIVATION_CODE = ("113047", "DCM", "Pixel by pixel mask")


def _stored(values: np.ndarray, item: Slice, dtype: np.dtype) -> np.ndarray:
    """HU ``values`` in a slice's stored units of ``dtype`` (rounded, clipped)."""
    stored = np.rint((values.astype(np.float64) - item.inter) / item.slope)
    info = np.iinfo(dtype)
    return np.clip(stored, info.min, info.max).astype(dtype)


def _frame_values(
    volume: DicomVolume, defaced: np.ndarray, mask: np.ndarray, k: int, plane: np.ndarray
) -> np.ndarray:
    """Slice ``k`` of the output as stored (rows, columns) from the source ``plane``."""
    item = volume.slices[k]
    change = mask[:, :, k].T
    if volume.padding is not None:
        change = change & (plane != volume.padding)
    out = plane.copy()
    new = defaced[:, :, k].T[change]
    if volume.image.data.dtype == plane.dtype:  # the record holds the stored values
        out[change] = new
    else:  # the record holds HU (per-slice rescaling)
        out[change] = _stored(new, item, plane.dtype)
    return out


def _mark_derived(ds: Any, key: str, description: str, *, reference_source: bool) -> None:
    """New UIDs and the attributes that say the instance is derived (module docstring)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    source_class, source_uid = str(ds.SOPClassUID), str(ds.SOPInstanceUID)
    ds.SeriesInstanceUID = derived_uid(str(ds.SeriesInstanceUID), key)
    ds.SOPInstanceUID = derived_uid(source_uid, key)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesDescription = f"{ds.get('SeriesDescription', '')}{DESCRIPTION_SUFFIX}".strip()
    image_type = list(ds.get("ImageType") or ["ORIGINAL", "PRIMARY"])
    ds.ImageType = ["DERIVED", *image_type[1:]]
    ds.DerivationDescription = description[:1024]
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = DERIVATION_CODE
    ds.DerivationCodeSequence = DicomSequence([code])
    ds.BurnedInAnnotation = "NO"
    if not reference_source:
        return
    source = Dataset()
    source.ReferencedSOPClassUID = source_class
    source.ReferencedSOPInstanceUID = source_uid
    ds.SourceImageSequence = DicomSequence([source])


def write_defaced(
    volume: DicomVolume,
    defaced: np.ndarray,
    mask: np.ndarray,
    folder: Path,
    *,
    key: str,
    description: str,
    deidentify: bool = False,
) -> list[Path]:
    """Write the defaced series into ``folder`` (made; one file per source file, named by
    position: ``00001.dcm`` ...); returns the files.

    Args:
        volume: the source series (:func:`ctadeface.dicom.volume.load_series`).
        defaced: the defaced image in the units of ``volume.image.data`` (its ``apply_fill``).
        mask: bool, same shape: the voxels that were replaced.
        key: mixed into the derived UIDs (e.g. the request's hash: other settings, other UIDs).
        description: DerivationDescription (what was done, with which model and fill).
        deidentify: apply the Basic Profile (:func:`ctadeface.dicom.deidentify.deidentify`).
    """
    import pydicom
    from pydicom.uid import UID

    if defaced.shape != mask.shape or mask.shape != volume.image.data.shape:
        raise ValueError(
            f"defaced {defaced.shape}, mask {mask.shape} and image {volume.image.data.shape} differ"
        )
    folder.mkdir(parents=True, exist_ok=True)
    by_file: dict[Path, list[int]] = {}
    for k, item in enumerate(volume.slices):
        by_file.setdefault(item.path, []).append(k)
    written = []
    for number, (path, ks) in enumerate(sorted(by_file.items(), key=lambda p: min(p[1])), 1):
        ds = pydicom.dcmread(path)
        syntax = UID(ds.file_meta.TransferSyntaxUID)
        pixels = ds.pixel_array
        if volume.slices[ks[0]].frame is None:
            out = _frame_values(volume, defaced, mask, ks[0], pixels)
        else:
            out = pixels.copy()
            for k in ks:
                frame = volume.slices[k].frame
                assert frame is not None
                out[frame] = _frame_values(volume, defaced, mask, k, pixels[frame])
        if deidentify:
            basic_profile(ds)
        _mark_derived(ds, key, description, reference_source=not deidentify)
        if syntax.is_compressed:
            ds.compress(syntax, out)
        else:
            ds.PixelData = np.ascontiguousarray(out).tobytes()
        target = folder / f"{number:05d}.dcm"
        ds.save_as(target, enforce_file_format=True)
        written.append(target)
    return written
