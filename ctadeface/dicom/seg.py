"""The face mask as a DICOM Segmentation object (highdicom), referencing the defaced series.

One binary segment, "face" (SCT 89545001 Face, category SCT 91723000 Anatomical Structure),
algorithm type AUTOMATIC, identified as ctadeface (family DCM Artificial Intelligence); frames in
the order of the defaced series' slices, empty frames left out; derived UIDs as the defaced
series' (``ctadeface.dicom.uid.derived_uid``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ctadeface.dicom.uid import derived_uid
from ctadeface.dicom.volume import DicomVolume

#: The segment's label, and the SeriesNumber offset of the SEG series from its source's.
SEGMENT_LABEL = "face"
SERIES_NUMBER_OFFSET = 9000
#: Manufacturer fields of the SEG (the software that made it).
MANUFACTURER = "ctadeface"


def face_segmentation(
    volume: DicomVolume,
    defaced_files: Sequence[Path],
    mask: np.ndarray,
    *,
    key: str,
    version: str,
) -> Any:
    """A ``highdicom.seg.Segmentation`` of ``mask`` (columns, rows, slices, as ``volume``'s
    record) over the defaced series ``defaced_files`` that :func:`write_defaced` wrote from
    ``volume`` (one file per slice in slice order, or one multi-frame file whose frames are the
    source's)."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    sources = [pydicom.dcmread(f) for f in defaced_files]
    if volume.slices[0].frame is None:
        planes = np.stack([mask[:, :, k].T for k in range(mask.shape[2])])
    else:  # the frames' order in the file, not the slices'
        slice_of = {item.frame: k for k, item in enumerate(volume.slices)}
        planes = np.stack([mask[:, :, slice_of[f]].T for f in range(len(slice_of))])
    if planes.shape[0] != sum(int(s.get("NumberOfFrames", 1)) for s in sources):
        raise ValueError(f"mask has {mask.shape[2]} slices, the series {len(sources)} file(s)")
    first = sources[0]
    algorithm = hd.AlgorithmIdentificationSequence(
        name="ctadeface", family=codes.DCM.ArtificialIntelligence, version=version
    )
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=codes.SCT.AnatomicalStructure,
        segmented_property_type=codes.SCT.Face,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )
    series = str(first.SeriesInstanceUID)
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=planes.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_instance_uid=derived_uid(series, f"{key}/seg"),
        series_number=int(first.get("SeriesNumber") or 0) + SERIES_NUMBER_OFFSET,
        sop_instance_uid=derived_uid(series, f"{key}/seg/instance"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MANUFACTURER,
        software_versions=version,
        device_serial_number="none",
        series_description=f"face mask of {first.get('SeriesDescription', 'the series')}"[:64],
    )
    seg.ContentCreatorName = ""  # Type 2; no person made it
    return seg
