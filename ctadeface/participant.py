"""Participant level: for each CT scan, load -> segment -> deface -> write, one scan at a time.

A scan that fails is recorded with its one-line reason and the loop goes on. The model is loaded
once, and only when a scan actually needs it (an up-to-date rerun never loads it).
"""

from __future__ import annotations

import datetime as _dt
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .deface import apply_fill, choose_fill
from .discover import Scan
from .errors import CTADefaceError, InputError
from .io import load_ct, remove_stale_temps, sha256_file, write_image_atomic, write_text_atomic
from .outputs import (
    OutputPaths,
    citation,
    dataset_description,
    defaced_sidecar,
    is_up_to_date,
    mask_sidecar,
    output_paths,
    to_json,
)
from .settings import Settings

log = logging.getLogger(__name__)

DEFACED, SKIPPED, FAILED, PLANNED = "defaced", "skipped", "failed", "planned"


class Segmenter(Protocol):
    """What the participant loop needs of ``segment.FaceSegmenter``."""

    def predict(self, hu: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ScanResult:
    """Outcome of one scan: status is defaced, skipped, failed or planned (dry run)."""

    scan: Scan
    status: str
    message: str = ""
    seconds: float = 0.0
    exit_code: int = 0


def prepare_output(settings: Settings) -> None:
    """Create the derivatives dataset's shared files once (safe under concurrent runs)."""
    out = settings.output_dir
    write_text_atomic(
        out / "dataset_description.json",
        to_json(dataset_description(settings.bids_dir, settings.container)),
        exclusive=True,
    )
    write_text_atomic(out / "logs" / "CITATION.md", citation(), exclusive=True)
    for stale in remove_stale_temps(out):
        log.info("removed a temporary file left by a killed run: %s", stale)


def deface_scan(
    scan: Scan, paths: OutputPaths, input_sha256: str, segmenter: Segmenter, settings: Settings
) -> str:
    """Load, segment, fill and write one scan; return a one-line summary."""
    started = _dt.datetime.now(_dt.UTC)
    t0 = time.perf_counter()
    image = load_ct(scan.path)
    mask = np.asarray(segmenter.predict(image.hu(), image.spacing), dtype=bool)
    fill = choose_fill(image, settings.fill)
    defaced = apply_fill(image, mask, fill, seed=int(input_sha256[:8], 16))
    n_voxels = int(np.count_nonzero(mask))
    volume_ml = n_voxels * float(np.prod(image.spacing)) / 1000.0
    if n_voxels == 0:
        log.warning("%s: the face mask is empty (no face in the field of view?)", scan.path)

    write_image_atomic(paths.mask, mask.astype(np.uint8), image)
    write_text_atomic(paths.mask_json, to_json(mask_sidecar(scan)))
    write_image_atomic(paths.defaced, defaced, image)
    provenance = {
        "Software": segmenter_versions(segmenter),
        "Model": {k: v for k, v in segmenter.describe().items() if k != "versions"},
        "Fill": {
            "Policy": fill.policy,
            "ValueHU": fill.value_hu,
            "NoiseStdHU": fill.std_hu,
            "StoredValue": fill.stored_value,
        },
        "StartTime": started.isoformat(timespec="seconds"),
        "DurationSeconds": round(time.perf_counter() - t0, 3),
        "InputSHA256": input_sha256,
        "OutputSHA256": {"defaced": sha256_file(paths.defaced), "mask": sha256_file(paths.mask)},
        "MaskVoxels": n_voxels,
        "MaskVolumeMl": round(volume_ml, 3),
        "Status": "mask-empty" if n_voxels == 0 else DEFACED,
    }
    sidecar, removed = defaced_sidecar(
        scan, provenance, remove_demographics=settings.remove_demographics
    )
    write_text_atomic(paths.defaced_json, to_json(sidecar))
    gone = f"; removed from sidecar: {', '.join(removed)}" if removed else ""
    return f"mask {volume_ml:.1f} ml, fill {fill.policy} = {fill.value_hu:.0f} HU{gone}"


def segmenter_versions(segmenter: Segmenter) -> dict[str, str]:
    """Versions of the software that made the outputs: ours plus what the segmenter reports."""
    from . import __version__

    versions = segmenter.describe().get("versions", {})
    return {"ctadeface": __version__, **{str(k): str(v) for k, v in versions.items()}}


def run(
    settings: Settings, scans: Sequence[Scan], make_segmenter: Callable[[], Segmenter]
) -> list[ScanResult]:
    """Deface every scan; never raises for a single scan's failure.

    Args:
        settings: the run's settings.
        scans: from ``discover.find_scans``.
        make_segmenter: called at most once, when the first scan needs the model.
    """
    if not settings.dry_run:
        prepare_output(settings)
    segmenter: Segmenter | None = None
    results: list[ScanResult] = []
    for scan in scans:
        t0 = time.perf_counter()
        paths = output_paths(settings.output_dir, scan)
        try:
            if scan.problem:
                raise InputError(scan.problem)
            input_sha256 = sha256_file(scan.path)
            if not settings.overwrite and is_up_to_date(paths, input_sha256):
                results.append(ScanResult(scan, SKIPPED, "outputs up to date"))
                log.info("%s: skipped, outputs up to date", scan.relpath)
                continue
            if settings.dry_run:
                results.append(ScanResult(scan, PLANNED, f"would write {paths.defaced}"))
                continue
            if segmenter is None:
                segmenter = make_segmenter()
            summary = deface_scan(scan, paths, input_sha256, segmenter, settings)
            seconds = time.perf_counter() - t0
            results.append(ScanResult(scan, DEFACED, summary, seconds))
            log.info("%s: defaced in %.1f s (%s)", scan.relpath, seconds, summary)
        except CTADefaceError as e:
            if _is_fatal(e):
                raise
            results.append(_failed(scan, str(e), e.exit_code, t0))
        except OSError as e:
            msg = f"{scan.path}: {e.strerror or e}"
            results.append(_failed(scan, msg, InputError.exit_code, t0))
        except (Exception, MemoryError) as e:  # a bug or a library failure: keep the others going
            msg = f"{scan.path}: unexpected error ({type(e).__name__}: {str(e)[:200]})"
            results.append(_failed(scan, msg, InputError.exit_code, t0))
    return results


def _failed(scan: Scan, message: str, exit_code: int, t0: float) -> ScanResult:
    log.error("%s", message)
    log.debug("traceback of the failure above", exc_info=True)
    return ScanResult(scan, FAILED, message, time.perf_counter() - t0, exit_code)


def _is_fatal(error: CTADefaceError) -> bool:
    """Errors that no other scan can escape (the model, the output folder) end the run."""
    from .errors import ModelError, OutputError

    return isinstance(error, ModelError | OutputError)


def log_path(output_dir: Path, started: _dt.datetime, pid: int) -> Path:
    """``logs/`` file name of one run."""
    return output_dir / "logs" / f"run-{started.strftime('%Y%m%dT%H%M%S')}-{pid}.log"
