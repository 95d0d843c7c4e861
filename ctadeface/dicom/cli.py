"""Command line: ``ctadeface-dicom INPUT OUTPUT [options]`` (also ``python -m ctadeface.dicom``).

Every CT image series under INPUT (a folder of any depth, or one file) is defaced with the BIDS
App's pipeline and written under OUTPUT as a new series (:mod:`ctadeface.dicom.run`). The
pipeline options are the BIDS App's (``ctadeface.cli.add_pipeline_options``), as are logging,
errors and exit codes (``ctadeface.cli.run_command``): 0 done; 1 some series failed or are still
identifiable; 64 usage; 65 every series unreadable; 66 no CT series found (or none of those
asked for); 73 OUTPUT cannot be written; 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ctadeface import __version__
from ctadeface.cli import (
    Command,
    add_pipeline_options,
    count_statuses,
    exit_code,
    load_pipeline,
    pipeline_fields,
    run_command,
)
from ctadeface.dicom.deidentify import PROFILES
from ctadeface.errors import ArgumentParser, NoInputError, UsageError
from ctadeface.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DicomSettings:
    """A DICOM run's settings.

    Attributes:
        input_dir: the folder (or file) searched for CT series; read only.
        series_uids: the SeriesInstanceUIDs to deface (empty: all CT image series).
        deidentify: ``basic`` (PS3.15 Basic Profile) or ``none``.
        resample_tilt: deface gantry-tilted series on an untilted grid (else refuse them).
        pipeline: the pipeline's settings (its ``bids_dir`` is ``input_dir``, its
            ``output_dir`` OUTPUT).
    """

    input_dir: Path
    series_uids: tuple[str, ...]
    deidentify: str
    resample_tilt: bool
    pipeline: Settings


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="ctadeface-dicom",
        description="Remove faces from the CT series of a DICOM folder; write each as a new "
        "series with its face mask as a DICOM Segmentation.",
    )
    p.add_argument("input", type=Path, help="folder (any depth; read only) or one DICOM file")
    p.add_argument("output", type=Path, help="folder for the defaced series")
    g = p.add_argument_group("selecting and de-identifying")
    g.add_argument(
        "--series-uid", "--series_uid", nargs="+", default=[], metavar="UID",
        help="SeriesInstanceUIDs to deface (default: every CT image series)",
    )  # fmt: skip
    g.add_argument(
        "--deidentify", choices=PROFILES, default="basic",
        help="basic: the DICOM PS3.15 Basic Application Level Confidentiality Profile "
        "(no dates, descriptions or private attributes kept; default); none: every attribute "
        "kept but the UIDs",
    )  # fmt: skip
    g.add_argument(
        "--resample-tilt", "--resample_tilt", action="store_true",
        help="deface gantry-tilted series on an untilted grid (the written series keeps its "
        "tilted geometry); default: refuse them",
    )  # fmt: skip
    add_pipeline_options(p)
    return p


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def settings_from_args(args: argparse.Namespace) -> DicomSettings:
    """Validate parsed arguments; UsageError names what is wrong."""
    source = args.input.expanduser().resolve()
    output = args.output.expanduser().resolve()
    if not source.exists():
        raise UsageError(f"{args.input}: no such folder or file")
    folder = source if source.is_dir() else source.parent
    if _inside(output, folder) or _inside(folder, output):
        raise UsageError(
            f"{args.output}: OUTPUT must not be INPUT, inside it or around it (INPUT is never "
            "written)"
        )
    pipeline = Settings(
        bids_dir=source, output_dir=output, analysis_level="participant", **pipeline_fields(args)
    )
    return DicomSettings(
        source, tuple(args.series_uid), args.deidentify, args.resample_tilt, pipeline
    )


def execute(job: DicomSettings) -> int:
    """Find, select and deface the series; write the summary; return the exit code."""
    from ctadeface.dicom import run as dicom_run
    from ctadeface.dicom.series import find_series
    from ctadeface.segment import torch_settings

    found, skipped = find_series(job.input_dir)
    for item in skipped:
        print(f"skipped {item.what}: {item.reason}")
    if job.series_uids:
        unknown = sorted(set(job.series_uids) - {s.uid for s in found})
        for uid in unknown:
            log.error("%s: no CT image series with SeriesInstanceUID %s", job.input_dir, uid)
        found = [s for s in found if s.uid in job.series_uids]
    if not found:
        raise NoInputError(f"{job.input_dir}: no CT image series to deface")
    pipeline = load_pipeline(job.pipeline)
    settings = pipeline.settings
    with torch_settings(settings.nprocs):
        results = dicom_run.run(
            settings,
            found,
            pipeline.make_segmenter,
            inference=pipeline.inference,
            deidentify=job.deidentify,
            resample_tilt=job.resample_tilt,
            model_key=pipeline.model_key,
            make_verifier=pipeline.make_verifier,
        )
    for r in results:
        if settings.dry_run or r.status != "skipped":
            print(f"{r.status}\t{r.source}\t{r.name}\t{r.message}")
    summary = count_statuses(r.status for r in results)
    print(f"ctadeface-dicom: {len(results)} CT series: {summary}; outputs in {settings.output_dir}")
    if not settings.dry_run:
        table, page = dicom_run.write_summary(settings.output_dir, results)
        print(f"summary: {table}; report: {page}")
    return exit_code([(r.status, r.exit_code) for r in results], settings.mask_mode)


def _command(argv: Sequence[str] | None) -> Command:
    job = settings_from_args(build_parser().parse_args(argv))
    log.info("ctadeface-dicom %s, %s", __version__, job.input_dir)
    out = job.pipeline
    return Command(out.output_dir, "dicom", out.dry_run, lambda: execute(job))


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ctadeface-dicom``; return the exit code."""
    return run_command(argv, _command)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
