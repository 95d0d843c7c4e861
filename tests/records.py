"""Typed records for tests that need a scan's provenance without running the pipeline."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ctadeface.deface import Fill, PostProcess, StrictParams
from ctadeface.discover import Scan
from ctadeface.provenance import ModelRecord, OutputHashes, Provenance, Request
from ctadeface.status import Status
from ctadeface.verify.identify import IdentityResult
from ctadeface.verify.verdict import RenderScore, Verification


def request(**changes: Any) -> Request:
    base = Request(
        input_sha256="in",
        model_checkpoint_sha256=("ckpt",),
        fill="p10",
        mask_mode="face",
        tta=False,
        inference="fast, precision auto",
        post_process=True,
        verified=True,
    )
    return dataclasses.replace(base, **changes)


def model() -> ModelRecord:
    return ModelRecord(
        model="open",
        folder="/models/open",
        trainer="nnUNetTrainer",
        plans="nnUNetPlans",
        configuration="3d_fullres",
        input_orientation="RAS",
        folds=("all",),
        checkpoint_sha256={"fold_all/checkpoint_final.pth": "ckpt"},
        licence="Apache-2.0",
        tta=False,
        device="cpu",
        tile_step_size=0.5,
        inference="fast",
        precision="fp32",
    )


def identity(p: float = 0.4) -> IdentityResult:
    return IdentityResult(views_tested=4, rank1_views=1, chance=0.0067, p=p, gallery_heads=149)


def verification(
    status: Status = Status.DEFACED, p_after: float = 0.1, mask_mode: str = "face"
) -> Verification:
    return Verification(
        status=status,
        mask_mode=mask_mode,
        identity=identity(0.001 if status == Status.IDENTIFIABLE else 0.4),
        identity_before=identity(1e-9),
        face_p_before=0.999,
        face_p_after=p_after,
        detections_before=15,
        detections_after=int(p_after >= 0.7),
        dlib_faces_before=12,
        dlib_faces_after=int(status == Status.FACE_LIKE),
        facenet_similarity=None,
        facenet_note="not available: FaceNet weights not found",
        face_threshold=0.5,
        per_render=(RenderScore(-300.0, 0.0, 0.999, p_after, 1, 0, False),),
    )


def provenance(
    status: Status = Status.DEFACED,
    p_after: float | None = 0.1,
    mask_mode: str = "face",
    **changes: Any,
) -> Provenance:
    """A provenance record; ``p_after`` None: verification off."""
    base = Provenance(
        software={"ctadeface": "0", "torch": "2"},
        model=model(),
        fill=Fill(policy="p10", value_hu=-1000.0, noise_std_hu=0.0, stored_value=-1000.0),
        post_processing=PostProcess(),
        strict=StrictParams() if mask_mode == "strict" else None,
        verification=None if p_after is None else verification(status, p_after, mask_mode),
        start_time="2026-01-01T00:00:00+00:00",
        duration_seconds=2.5,
        input_sha256="in",
        request=request(mask_mode=mask_mode),
        output_sha256=OutputHashes(defaced="d", mask="m"),
        mask_voxels=1000,
        mask_volume_ml=123.456,
        status=status,
    )
    return dataclasses.replace(base, **changes)


def scan(sub: str, ses: str | None = None) -> Scan:
    """A CT scan of the raw dataset ``/raw`` (nothing on disk)."""
    folder = f"sub-{sub}" + (f"/ses-{ses}" if ses else "") + "/anat"
    stem = f"sub-{sub}" + (f"_ses-{ses}" if ses else "")
    ents = (("sub", sub),) + ((("ses", ses),) if ses else ())
    return Scan(
        path=Path("/raw") / folder / f"{stem}_ct.nii.gz",
        relpath=f"{folder}/{stem}_ct.nii.gz",
        subject=sub,
        session=ses,
        entities=ents,
        suffix="ct",
        datatype="anat",
        extension=".nii.gz",
        metadata=MappingProxyType({}),
        sidecars=(),
        problem=None,
    )
