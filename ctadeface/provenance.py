"""The provenance of one defaced scan, as typed records.

The participant level builds one :class:`Provenance` per scan from the records its stages return
(the segmenter's :class:`ModelRecord`, the :class:`~ctadeface.deface.fill.Fill`, the
:class:`~ctadeface.deface.postprocess.PostProcess`, the
:class:`~ctadeface.verify.verdict.Verification`); ``outputs`` writes it as the ``Defacing`` object
of the defaced image's sidecar (:func:`ctadeface.records.to_json`: PascalCase keys, like BIDS),
and the skip logic and the group level read it back through the same classes
(:func:`ctadeface.records.from_json`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ctadeface.deface.fill import Fill
from ctadeface.deface.postprocess import PostProcess
from ctadeface.deface.strict import StrictParams
from ctadeface.records import ABSENT
from ctadeface.status import Status
from ctadeface.verify.verdict import Verification


@dataclass(frozen=True)
class ModelRecord:
    """The model a scan was segmented with, and how (``FaceSegmenter.describe``).

    Attributes:
        model: the name given to ``--model`` (a registry name or a path).
        folder: the trained-model folder.
        trainer, plans, configuration: nnU-Net's names, from the folder name.
        input_orientation: axis codes the array is turned to, or "stored array order".
        folds: the folds used; checkpoint_sha256: checkpoint path (relative) -> sha256.
        licence: the model's licence as the registry or the user states it.
        tta: mirroring test-time augmentation; device: torch device; tile_step_size: the
            sliding window's step (fraction of the patch).
        inference: the strategy's description; precision: its network arithmetic.
    """

    model: str
    folder: str
    trainer: str
    plans: str
    configuration: str
    input_orientation: str
    folds: tuple[str, ...]
    checkpoint_sha256: Mapping[str, str]
    licence: str
    tta: bool
    device: str
    tile_step_size: float
    inference: str
    precision: str


@dataclass(frozen=True)
class Request:
    """What an up-to-date output must have been made from: a rerun with the same request and
    unchanged outputs skips the scan.

    Attributes:
        input_sha256: of the source image file.
        model_checkpoint_sha256: the model's checkpoint sha256s, sorted.
        fill: the fill policy; mask_mode: ``face`` or ``strict``; tta: test-time augmentation.
        inference: ``exact`` or ``fast, precision P`` (the strategy the model runs).
        post_process: whether the post-processing ran; verified: whether verification ran.
    """

    input_sha256: str
    model_checkpoint_sha256: tuple[str, ...]
    fill: str
    mask_mode: str
    tta: bool
    inference: str
    post_process: bool
    verified: bool


@dataclass(frozen=True)
class OutputHashes:
    """sha256 of the files written for a scan."""

    defaced: str
    mask: str


@dataclass(frozen=True)
class Provenance:
    """Everything recorded about one defaced scan.

    Attributes:
        software: package -> version (ctadeface, torch, nnunetv2, ...).
        model: the model and how it ran; fill: what replaced the masked voxels.
        post_processing: its parameters, None when it was off.
        strict: the strict cut's parameters, None in face mask mode.
        verification: the verdict, None with ``--no-verify``.
        start_time: ISO 8601, UTC; duration_seconds: the scan's wall time (model load apart).
        input_sha256: of the source; request: what the outputs were made from.
        output_sha256: of the defaced image and the mask.
        mask_voxels, mask_volume_ml: size of the mask (voxels, mL).
        status: the scan's status; removed_sidecar_fields: identifying sidecar keys dropped.
    """

    software: Mapping[str, str]
    model: ModelRecord
    fill: Fill
    post_processing: PostProcess | None = field(metadata={ABSENT: "none"})
    strict: StrictParams | None = field(metadata={ABSENT: "none"})
    verification: Verification | None = field(metadata={ABSENT: "not run (--no-verify)"})
    start_time: str
    duration_seconds: float
    input_sha256: str
    request: Request
    output_sha256: OutputHashes
    mask_voxels: int
    mask_volume_ml: float
    status: Status
    removed_sidecar_fields: tuple[str, ...] = ()
