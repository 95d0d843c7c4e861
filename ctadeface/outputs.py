"""The derivatives dataset: file names, sidecars (PHI removed, provenance), dataset_description.

Layout (``docs/outputs.md``), for a source ``sub-01/ses-1/anat/sub-01_ses-1_ce-iodine_ct``::

    sub-01/ses-1/anat/sub-01_ses-1_ce-iodine_desc-defaced_ct.nii.gz (+ .json)
    sub-01/ses-1/anat/sub-01_ses-1_ce-iodine_space-orig_label-face_mask.nii.gz (+ .json)
    sub-01/figures/sub-01_ses-1_ce-iodine_desc-deface_render.png
    sub-01/figures/sub-01_ses-1_ce-iodine_desc-defacethumb_render.jpg

The defaced image's sidecar is written last: it records the sha256 of the input and of every
output, and a rerun skips the scan only when all of them still match.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ctadeface import __version__
from ctadeface.discover import Scan
from ctadeface.io import sha256_file
from ctadeface.provenance import Provenance, Request
from ctadeface.records import RecordError, from_json
from ctadeface.records import to_json as record_json

log = logging.getLogger(__name__)

CODE_URL = "https://github.com/ctadeface/ctadeface"
BIDS_VERSION = "1.10.0"
PROVENANCE_KEY = "Defacing"

#: Sidecar fields that identify a person, an institution or a date; removed from every sidecar
#: carried forward (matched case-insensitively). The one list of them in the code.
PHI_FIELDS: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "InstitutionCodeSequence",
    "StationName",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "RequestingPhysician",
    "PhysiciansOfRecord",
    "NameOfPhysiciansReadingStudy",
    "OperatorsName",
    "AccessionNumber",
    "StudyID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "FrameOfReferenceUID",
    "DeviceSerialNumber",
    "AcquisitionDateTime",
    "AcquisitionDate",
    "AcquisitionTime",
    "StudyDate",
    "StudyTime",
    "SeriesDate",
    "SeriesTime",
    "ContentDate",
    "ContentTime",
    "InstanceCreationDate",
    "InstanceCreationTime",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
)
#: Removed only with ``--remove-demographics``: useful for science, identifying in rare cases.
DEMOGRAPHIC_FIELDS: tuple[str, ...] = ("PatientSex", "PatientAge", "PatientWeight", "PatientSize")

# BIDS entity order (specification, "Entity table"); only the ones CT file names can carry.
_ENTITY_ORDER = ("sub", "ses", "acq", "ce", "rec", "run", "space", "chunk", "label", "desc")

CITATION_MD = """\
# How to cite

Faces were removed from the CT images with ctadeface {version} ({code_url}), which segments
the facial soft tissue with an nnU-Net v2 model and replaces it, following CTA-DEFACE.

- Mahmutoglu MA, Rastogi A, Schell M, et al. Deep learning-based defacing tool for CT
  angiography: CTA-DEFACE. Eur Radiol Exp. 2024;8:111. doi:10.1186/s41747-024-00510-9
- Isensee F, Jaeger PF, Kohl SAA, Petersen J, Maier-Hein KH. nnU-Net: a self-configuring method
  for deep learning-based biomedical image segmentation. Nat Methods. 2021;18:203-211.
  doi:10.1038/s41592-020-01008-z
- ctadeface {version}, {code_url}
"""


@dataclass(frozen=True)
class OutputPaths:
    """Where the outputs of one scan go (absolute paths)."""

    defaced: Path
    defaced_json: Path
    mask: Path
    mask_json: Path
    figure: Path
    thumbnail: Path

    def images_and_sidecars(self) -> tuple[Path, Path, Path, Path]:
        """The four files every processed scan has, in the order they are written."""
        return (self.mask, self.mask_json, self.defaced, self.defaced_json)


def bids_name(entities: Iterable[tuple[str, str]], extra: Mapping[str, str], suffix: str) -> str:
    """A BIDS file name stem (no extension) from ``entities`` plus ``extra``, in spec order."""
    merged = dict(entities)
    merged.update(extra)
    known = [k for k in _ENTITY_ORDER if k in merged]
    unknown = [k for k in merged if k not in _ENTITY_ORDER]
    parts = [f"{k}-{merged[k]}" for k in known + unknown]
    return "_".join([*parts, suffix])


def output_paths(output_dir: Path, scan: Scan) -> OutputPaths:
    """The derivative file names of ``scan`` inside ``output_dir``."""
    folder = output_dir / f"sub-{scan.subject}"
    if scan.session is not None:
        folder = folder / f"ses-{scan.session}"
    folder = folder / scan.datatype
    defaced = bids_name(scan.entities, {"desc": "defaced"}, scan.suffix)
    mask = bids_name(scan.entities, {"space": "orig", "label": "face"}, "mask")
    figure = bids_name(scan.entities, {"desc": "deface"}, "render")
    thumbnail = bids_name(scan.entities, {"desc": "defacethumb"}, "render")
    figures = output_dir / f"sub-{scan.subject}" / "figures"
    return OutputPaths(
        defaced=folder / f"{defaced}{scan.extension}",
        defaced_json=folder / f"{defaced}.json",
        mask=folder / f"{mask}.nii.gz",
        mask_json=folder / f"{mask}.json",
        figure=figures / f"{figure}.png",
        thumbnail=figures / f"{thumbnail}.jpg",
    )


def bids_uri(scan: Scan) -> str:
    """The BIDS URI of the source image in the raw dataset (``DatasetLinks`` key ``raw``)."""
    return f"bids:raw:{scan.relpath}"


def scrub(
    metadata: Mapping[str, Any], *, remove_demographics: bool = False
) -> tuple[dict[str, Any], list[str]]:
    """Copy ``metadata`` without identifying fields; return (clean copy, removed keys)."""
    drop = {k.lower() for k in PHI_FIELDS}
    if remove_demographics:
        drop |= {k.lower() for k in DEMOGRAPHIC_FIELDS}
    clean = {k: v for k, v in metadata.items() if k.lower() not in drop}
    removed = sorted(k for k in metadata if k.lower() in drop)
    return clean, removed


def defaced_sidecar(
    scan: Scan, provenance: Provenance, *, remove_demographics: bool = False
) -> tuple[dict[str, Any], list[str]]:
    """The sidecar of the defaced image: scrubbed source metadata, Sources, and the provenance
    (with the removed keys) under ``Defacing``; returns (sidecar, removed keys)."""
    clean, removed = scrub(scan.metadata, remove_demographics=remove_demographics)
    clean["Sources"] = [bids_uri(scan)]
    clean["Description"] = (
        "CT image with the face removed: voxels of the face mask replaced; "
        "all other voxels identical to the source."
    )
    recorded = replace(provenance, removed_sidecar_fields=tuple(removed))
    clean[PROVENANCE_KEY] = record_json(recorded)
    return clean, removed


def mask_sidecar(scan: Scan) -> dict[str, Any]:
    """The sidecar of the face mask (BIDS derivatives: masks)."""
    return {
        "Type": "Face",
        "Description": "Facial soft tissue removed by ctadeface (1 = removed), on the source grid.",
        "Sources": [bids_uri(scan)],
        "SpatialReference": bids_uri(scan),
    }


def dataset_description(bids_dir: Path, container: Mapping[str, str] | None) -> dict[str, Any]:
    """dataset_description.json of the derivatives dataset."""
    generated: dict[str, Any] = {
        "Name": "ctadeface",
        "Version": __version__,
        "CodeURL": CODE_URL,
        "Description": "Face removal for CT angiography with an nnU-Net v2 face mask",
    }
    if container:
        generated["Container"] = dict(container)
    return {
        "Name": "ctadeface: defaced CT images",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [generated],
        "SourceDatasets": [{"URL": bids_dir.resolve().as_uri()}],
        "DatasetLinks": {"raw": bids_dir.resolve().as_uri()},
    }


def citation() -> str:
    """Text of logs/CITATION.md."""
    return CITATION_MD.format(version=__version__, code_url=CODE_URL)


def to_json(obj: Any) -> str:
    """Stable, readable JSON text (sorted keys would reorder source sidecars; we keep order).

    Strict JSON: a NaN or infinite number (Python's json reads them from a sidecar) is written
    as null."""
    return json.dumps(_finite(obj), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def read_provenance(defaced_json: Path) -> Provenance | None:
    """The provenance of a defaced sidecar, or None if absent, unreadable or not of this
    version's shape."""
    try:
        record = json.loads(defaced_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    prov = record.get(PROVENANCE_KEY) if isinstance(record, dict) else None
    if not isinstance(prov, dict):
        return None
    try:
        return from_json(Provenance, prov)
    except RecordError as err:
        log.info("%s: provenance not readable (%s)", defaced_json, err)
        return None


def is_up_to_date(paths: OutputPaths, request: Request) -> bool:
    """True when all outputs exist, were made for this ``request`` (input sha256, model, fill,
    TTA, strategy, post-processing, verification) and still match their recorded sha256."""
    if not all(p.is_file() for p in paths.images_and_sidecars()):
        return False
    prov = read_provenance(paths.defaced_json)
    if prov is None or prov.request != request:
        return False
    recorded = prov.output_sha256
    for digest, path in ((recorded.defaced, paths.defaced), (recorded.mask, paths.mask)):
        if digest != sha256_file(path):
            log.info("%s changed since it was written; redoing", path)
            return False
    return True
