"""One typed, validated record of what a run was asked to do (built once by ``cli``), and the
checks of the values that more than one command takes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ctadeface.errors import UsageError

DEFAULT_MODEL = "open"
DEVICES = ("auto", "cuda", "cpu")
LEVELS = ("participant", "group")
#: Network arithmetic of the fast strategy (``segment.segmenter.choose_precision``).
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: What the mask removes (docs/mask-definition.md): the facial soft tissue (``face``, as
#: CTA-DEFACE), or also the front of the facial skeleton (``strict``).
MASK_MODES = ("face", "strict")


def check_face_threshold(p: float) -> float:
    """A face probability threshold: in (0, 1] (0 would flag every scan). Raises UsageError."""
    if not 0.0 < p <= 1.0:
        raise UsageError(f"--face-threshold must be in (0, 1], got {p}")
    return float(p)


def check_nprocs(n: int | None) -> int | None:
    """CPU threads: None (torch's default) or at least 1. Raises UsageError."""
    if n is not None and n < 1:
        raise UsageError(f"--nprocs must be at least 1, got {n}")
    return n


@dataclass(frozen=True)
class Settings:
    """Run settings; paths are absolute.

    Attributes:
        bids_dir: the raw BIDS dataset (read only).
        output_dir: the derivatives dataset written by this tool.
        analysis_level: "participant" or "group".
        participant_labels, session_labels: labels as given, with or without ``sub-``/``ses-``
            (``discover.find_scans`` checks them); empty = all.
        bids_filters: pybids query for CT images (the ``ct`` key of --bids-filter-file).
        skip_validation: skip the basic BIDS checks of the input dataset.
        model: registry name, trained-model folder or exported zip.
        device: "auto", "cuda" or "cpu".
        fill: fill policy of ``ctadeface.deface.fill``.
        mask_mode: ``face`` or ``strict`` (:data:`MASK_MODES`).
        tta: nnU-Net test-time augmentation (mirroring).
        exact: segment with nnU-Net's own pipeline over the whole field of view (as
            ``nnUNetv2_predict`` does) instead of the fast strategy of ``FaceSegmenter``.
        precision: the fast strategy's network arithmetic: "auto" (fp16 on CUDA, bf16 on CPUs
            with native bfloat16, else fp32), "fp32", "bf16" or "fp16" (CUDA).
        postprocess: apply ``deface.postprocess`` (air margin, no bone, nothing far from the
            patient) to the mask; None = the model's own default (on for ``open``, off for
            other models).
        nprocs: CPUs to use: torch threads (applied once for the run), render threads and dlib
            CNN workers of the verification (None = all this process may use).
        work_dir: scratch space (extracted model zips).
        overwrite: redo scans whose outputs are up to date.
        dry_run: list what would be done; write nothing.
        verify: render the skin before/after and look for a face (MTCNN, FaceNet if present).
        face_threshold: a defaced render reaching this MTCNN probability is face-like.
        remove_demographics: also drop PatientSex/PatientAge/PatientWeight from sidecars.
        verbosity: 0 = warnings, 1 = info, 2+ = debug (tracebacks shown from 1 on).
        container: {"Type": ..., "Tag": ...} when running inside a container image, else empty.
    """

    bids_dir: Path
    output_dir: Path
    analysis_level: str
    participant_labels: tuple[str, ...] = ()
    session_labels: tuple[str, ...] = ()
    bids_filters: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    skip_validation: bool = False
    model: str = DEFAULT_MODEL
    device: str = "auto"
    fill: str = "p10"
    mask_mode: str = "face"
    tta: bool = False
    exact: bool = False
    precision: str = "auto"
    postprocess: bool | None = None
    nprocs: int | None = None
    work_dir: Path | None = None
    overwrite: bool = False
    dry_run: bool = False
    verify: bool = True
    face_threshold: float = 0.5
    remove_demographics: bool = False
    verbosity: int = 0
    container: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def cache_dir(self) -> Path:
        """Where model zips are extracted: ``<work_dir>/models`` or ``~/.cache/ctadeface``."""
        if self.work_dir is not None:
            return self.work_dir / "models"
        return Path.home() / ".cache" / "ctadeface"
