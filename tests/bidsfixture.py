"""Build a tiny raw BIDS dataset with CT images, for discovery and end-to-end tests.

Layout written by :func:`make_bids_dataset` (paths relative to the returned root)::

    dataset_description.json
    ct.json                                             root sidecar, inherited by every CT
    participants.tsv
    sub-01/anat/sub-01_acq-cta_ce-iodine_ct.nii.gz      CT (no sessions, "anat" folder)
    sub-01/anat/sub-01_acq-cta_ce-iodine_ct.json        file-level sidecar (PHI + normal fields)
    sub-01/anat/sub-01_T1w.nii.gz                       not a CT: never an input
    sub-02/ses-1/ct/sub-02_ses-1_ce-iodine_CT.nii.gz    CT ("ct" folder, upper-case suffix)
    sub-02/ses-1/ct/sub-02_ses-1_ce-iodine_CT.json
    sub-02/ses-2/anat/sub-02_ses-2_acq-cta_run-1_ct.nii.gz   CT (no contrast entity)
    sub-02/ses-2/anat/sub-02_ses-2_acq-cta_run-1_ct.json
    derivatives/other/...  sourcedata/...  code/...  .git/...   CT-looking decoys, never inputs

The module-level constants below hold the relative paths and sidecar contents so tests can
assert against them instead of repeating literals.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

#: Relative POSIX paths of the three CT images, sorted.
CT_RELPATHS: tuple[str, ...] = (
    "sub-01/anat/sub-01_acq-cta_ce-iodine_ct.nii.gz",
    "sub-02/ses-1/ct/sub-02_ses-1_ce-iodine_CT.nii.gz",
    "sub-02/ses-2/anat/sub-02_ses-2_acq-cta_run-1_ct.nii.gz",
)

#: Non-CT image inside the raw dataset (must never be an input).
T1W_RELPATH = "sub-01/anat/sub-01_T1w.nii.gz"

#: CT-looking files outside the raw data folders (must never be inputs).
DECOY_RELPATHS: tuple[str, ...] = (
    "derivatives/other/sub-01/anat/sub-01_acq-cta_ce-iodine_ct.nii.gz",
    "sourcedata/sub-01/anat/sub-01_acq-cta_ce-iodine_ct.nii.gz",
    "code/sub-01/anat/sub-01_acq-cta_ce-iodine_ct.nii.gz",
    ".git/annex/sub-01/anat/sub-01_acq-cta_ce-iodine_ct.nii.gz",
)

DATASET_DESCRIPTION: dict[str, Any] = {
    "Name": "ctadeface test dataset",
    "BIDSVersion": "1.10.0",
    "DatasetType": "raw",
}

#: Root-level sidecar: applies to every CT image (inheritance principle).
ROOT_SIDECAR: dict[str, Any] = {
    "Modality": "CT",
    "Manufacturer": "X",
    "InstitutionName": "Secret Hospital",
    "ConvolutionKernel": "H30s",
}

_PHI: dict[str, Any] = {
    "PatientName": "Doe^Jane",
    "PatientID": "P123456",
    "PatientBirthDate": "19700101",
    "AcquisitionDateTime": "2023-04-05T10:11:12",
    "ReferringPhysicianName": "Dr^Who",
    "AccessionNumber": "A987",
}

#: File-level sidecars by image relpath: PHI fields plus ordinary acquisition fields.
FILE_SIDECARS: dict[str, dict[str, Any]] = {
    CT_RELPATHS[0]: {
        **_PHI,
        "KVP": 120,
        "ContrastBolusAgent": "Iomeprol",
        "ConvolutionKernel": "Hr40",  # overrides the root value
        "SliceThickness": 0.75,
    },
    CT_RELPATHS[1]: {
        **_PHI,
        "PatientName": "Roe^Richard",
        "KVP": 100,
        "ContrastBolusAgent": "Iopromide",
    },
    CT_RELPATHS[2]: {**_PHI, "KVP": 80, "Manufacturer": "Y"},
}


def tiny_image(relpath: str) -> nib.Nifti1Image:
    """Return an 8x8x8 int16 image (values -1024..~1000 HU-like), 1 mm isotropic, RAS+ affine.

    ``relpath`` only seeds the content so each file differs; the voxel grid is i,j,k.
    """
    seed = sum(relpath.encode())
    rng = np.random.default_rng(seed)
    data = rng.integers(-1024, 1000, size=(8, 8, 8), dtype=np.int16)
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_xyzt_units("mm", "sec")
    return img


def _write_json(path: Path, content: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


def _sidecar_path(image: Path) -> Path:
    name = image.name.removesuffix(".gz").removesuffix(".nii")
    return image.with_name(name + ".json")


def make_bids_dataset(
    root: Path, image_factory: Callable[[str], nib.Nifti1Image] | None = None
) -> Path:
    """Write the small CT dataset described in the module docstring under ``root``; return it.

    ``image_factory(relpath)`` makes each CT image (default :func:`tiny_image`); the T1w and
    decoy images always use :func:`tiny_image`.
    """
    factory = image_factory or tiny_image
    root.mkdir(parents=True, exist_ok=True)
    _write_json(root / "dataset_description.json", DATASET_DESCRIPTION)
    _write_json(root / "ct.json", ROOT_SIDECAR)
    (root / "participants.tsv").write_text("participant_id\nsub-01\nsub-02\n", encoding="utf-8")
    for rel in CT_RELPATHS:
        image = root / rel
        image.parent.mkdir(parents=True, exist_ok=True)
        nib.save(factory(rel), image)
        _write_json(_sidecar_path(image), FILE_SIDECARS[rel])
    for rel in (T1W_RELPATH, *DECOY_RELPATHS):
        image = root / rel
        image.parent.mkdir(parents=True, exist_ok=True)
        nib.save(tiny_image(rel), image)
    _write_json(
        root / "derivatives" / "other" / "dataset_description.json",
        {"Name": "other", "BIDSVersion": "1.10.0", "DatasetType": "derivative"},
    )
    (root / "code" / "convert.py").write_text("# conversion script\n", encoding="utf-8")
    return root
