"""Command line: ``ctadeface bids_dir output_dir {participant,group} [options]``.

The only module that reads argv, prints, sets up logging and turns errors into exit codes
(BIDS execution spec, BEP027): 0 done; 1 some scans failed; 64 usage; 65 all inputs unreadable;
66 no CT image matched; 73 output cannot be created; 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import logging
import os
import re
import signal
import sys
import threading
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ctadeface import __version__
from ctadeface.allocator import one_arena
from ctadeface.errors import (
    EXIT_DATAERR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SOME_FAILED,
    EXIT_TERMINATED,
    ArgumentParser,
    CTADefaceError,
    NoInputError,
    UsageError,
)
from ctadeface.settings import (
    DEFAULT_MODEL,
    DEVICES,
    LEVELS,
    MASK_MODES,
    PRECISIONS,
    Settings,
    check_face_threshold,
    check_nprocs,
)
from ctadeface.status import Status

if TYPE_CHECKING:
    from ctadeface import participant
    from ctadeface.discover import Scan

log = logging.getLogger("ctadeface")
_NIBABEL_LOGGER = "nibabel.global"


def build_parser() -> argparse.ArgumentParser:
    """The BIDS App's parser (fMRIPrep/MRIQC spelling; ``_`` variants accepted); its pipeline
    options are :func:`add_pipeline_options`, shared with ``ctadeface-dicom``."""
    p = ArgumentParser(
        prog="ctadeface",
        description="Remove faces from CT angiography head scans of a BIDS dataset.",
    )
    p.add_argument("bids_dir", type=Path, help="the raw BIDS dataset (read only)")
    p.add_argument("output_dir", type=Path, help="the derivatives dataset to write")
    p.add_argument("analysis_level", choices=LEVELS, help="participant, then group")
    g = p.add_argument_group("selecting inputs")
    g.add_argument(
        "--participant-label", "--participant_label", nargs="+", default=[], metavar="LABEL",
        help="participants to process (with or without 'sub-'); default: all",
    )  # fmt: skip
    g.add_argument(
        "--session-label", "--session_label", nargs="+", default=[], metavar="LABEL",
        help="sessions to process (with or without 'ses-'); default: all",
    )  # fmt: skip
    g.add_argument(
        "--bids-filter-file", "--bids_filter_file", type=Path, metavar="FILE",
        help='JSON with a pybids query under the key "ct", e.g. {"ct": {"ceagent": "iodine"}}',
    )  # fmt: skip
    g.add_argument(
        "--skip-bids-validation", "--skip_bids_validation", action="store_true",
        help="do not check that bids_dir looks like a BIDS dataset",
    )  # fmt: skip
    defacing = add_pipeline_options(p)
    defacing.add_argument(
        "--remove-demographics", "--remove_demographics", action="store_true",
        help="also remove PatientSex, PatientAge, PatientWeight, PatientSize from sidecars",
    )  # fmt: skip
    return p


def add_pipeline_options(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The options of every command that defaces (the pipeline's settings: defacing,
    verification, running); returns the "defacing" group for a command's own additions."""
    from ctadeface.deface import FILL_POLICIES

    m = p.add_argument_group("defacing")
    m.add_argument(
        "--model", default=DEFAULT_MODEL, metavar="NAME|PATH",
        help="registry name (see 'python -m ctadeface.models'), nnU-Net v2 trained-model "
        f"folder or exported zip (default: {DEFAULT_MODEL})",
    )  # fmt: skip
    m.add_argument("--device", choices=DEVICES, default="auto", help="default: auto (CUDA if any)")
    m.add_argument(
        "--fill", choices=FILL_POLICIES, default="p10",
        help="what replaces the face: the image's 10th percentile (default), -1000 HU, or "
        "air-like noise",
    )  # fmt: skip
    m.add_argument(
        "--mask", choices=MASK_MODES, default="face", dest="mask_mode",
        help="face: the facial soft tissue, bone kept (default, as CTA-DEFACE); strict: also the "
        "front of the facial skeleton (nasal bones, orbital rims, maxilla, teeth, anterior "
        "mandible), for data that do not need it",
    )  # fmt: skip
    m.add_argument(
        "--tta", action=argparse.BooleanOptionalAction, default=False,
        help="nnU-Net test-time augmentation (mirroring); slower (default: off)",
    )  # fmt: skip
    m.add_argument(
        "--exact", action="store_true",
        help="segment exactly as nnUNetv2_predict does (nnU-Net's own preprocessing, whole "
        "field of view, float32 on CPU); several times slower. Default: the same resampling, "
        "network and tiles, computed only where they reach the body (see --precision)",
    )  # fmt: skip
    m.add_argument(
        "--precision", choices=PRECISIONS, default="auto",
        help="network arithmetic of the default (fast) path: auto = fp16 on CUDA, bf16 on CPUs "
        "with native bfloat16 (AVX512-BF16/AMX), else fp32 (default: auto)",
    )  # fmt: skip
    v = p.add_argument_group("verification")
    v.add_argument(
        "--verify", action=argparse.BooleanOptionalAction, default=True,
        help="render the skin before and after, test whether the person can still be "
        "recognised (dlib's face descriptor against a gallery of other heads), look for a face "
        "(MTCNN, dlib; FaceNet similarity when its weights are present) and save a figure "
        "(default: on)",
    )  # fmt: skip
    v.add_argument(
        "--face-threshold", "--face_threshold", type=float, default=0.5, metavar="P",
        help="a defaced render reaching this MTCNN face probability is face-like (default: 0.5)",
    )  # fmt: skip
    m.add_argument(
        "--postprocess", action=argparse.BooleanOptionalAction, default=None,
        help="give the mask at least 6 mm of air in front of the skin, never fill bone or what "
        "the skull encloses, drop what lies > 30 mm from the patient (default: on for 'open', "
        "off for other models)",
    )  # fmt: skip
    r = p.add_argument_group("running")
    r.add_argument(
        "--nprocs", "--n_cpus", "--n-cpus", type=int, metavar="N",
        help="CPUs to use: torch threads, render threads, dlib CNN workers (default: all)",
    )  # fmt: skip
    r.add_argument("-w", "--work-dir", "--work_dir", type=Path, help="scratch folder")
    r.add_argument("--overwrite", action="store_true", help="redo scans with up-to-date outputs")
    r.add_argument(
        "--dry-run", "--dry_run", action="store_true", help="list what would be done; write nothing"
    )
    r.add_argument("-v", "--verbose", action="count", default=0, help="more output (repeatable)")
    r.add_argument("--version", action="version", version=f"ctadeface {__version__}")
    return m


def pipeline_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The Settings fields of :func:`add_pipeline_options`' arguments, checked."""
    return {
        "model": args.model,
        "device": args.device,
        "fill": args.fill,
        "mask_mode": args.mask_mode,
        "tta": args.tta,
        "exact": args.exact,
        "precision": args.precision,
        "postprocess": args.postprocess,
        "nprocs": check_nprocs(args.nprocs),
        "work_dir": args.work_dir.expanduser().resolve() if args.work_dir else None,
        "overwrite": args.overwrite,
        "dry_run": args.dry_run,
        "verify": args.verify,
        "face_threshold": check_face_threshold(args.face_threshold),
        "verbosity": args.verbose,
    }


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def settings_from_args(args: argparse.Namespace, environ: dict[str, str]) -> Settings:
    """Validate parsed arguments into Settings; UsageError names what is wrong."""
    from ctadeface.discover import load_filter_file

    bids_dir = args.bids_dir.expanduser().resolve()
    output_dir = args.output_dir.expanduser().resolve()
    if not bids_dir.is_dir():
        raise UsageError(f"{args.bids_dir}: bids_dir is not a folder")
    if _inside(output_dir, bids_dir) and not _inside(output_dir, bids_dir / "derivatives"):
        raise UsageError(
            f"{args.output_dir}: output_dir must not be the raw dataset or inside it "
            "(use <bids_dir>/derivatives/ctadeface or a folder elsewhere)"
        )
    filters = load_filter_file(args.bids_filter_file) if args.bids_filter_file else {}
    container = {
        key: environ[f"CTADEFACE_CONTAINER_{key.upper()}"]
        for key in ("Type", "Tag")
        if environ.get(f"CTADEFACE_CONTAINER_{key.upper()}")
    }
    return Settings(
        bids_dir=bids_dir,
        output_dir=output_dir,
        analysis_level=args.analysis_level,
        participant_labels=tuple(args.participant_label),
        session_labels=tuple(args.session_label),
        bids_filters=MappingProxyType(dict(filters)),
        skip_validation=args.skip_bids_validation,
        remove_demographics=args.remove_demographics,
        **pipeline_fields(args),
        container=MappingProxyType(container),
    )


class _Brief(logging.Formatter):
    """One line per record: tracebacks only when asked (-v)."""

    def __init__(self, tracebacks: bool) -> None:
        super().__init__("ctadeface: %(levelname)s: %(message)s")
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        if not self.tracebacks:
            record = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None})
        return super().format(record)


class _Collect(logging.Handler):
    """Keeps the run's log records in memory, to be written as one file at the end."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextlib.contextmanager
def _logging(verbosity: int) -> Iterator[_Collect]:
    """The run's logging: one-line records on stderr (warnings, more with -v) and every record
    kept for the run log; Python warnings are logged (ignored at verbosity 0). Everything is put
    back as it was when the run ends."""
    console = logging.StreamHandler(sys.stderr)
    console.setLevel({0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG))
    console.setFormatter(_Brief(tracebacks=verbosity > 0))
    collect = _Collect()
    ours = [logging.getLogger(name) for name in ("ctadeface", "py.warnings")]
    # nibabel prints its header fix-ups ("vox offset 348 too low ...") through its own bare
    # stderr handler: keep them in the run log, on the console only with -v.
    nibabel_logger = logging.getLogger(_NIBABEL_LOGGER)
    saved = [(lg, lg.level, lg.propagate, list(lg.handlers)) for lg in [*ours, nibabel_logger]]
    for logger in ours:
        logger.setLevel(logging.DEBUG)
        logger.addHandler(console)
        logger.addHandler(collect)
        logger.propagate = False
    for h in list(nibabel_logger.handlers):
        nibabel_logger.removeHandler(h)
    nibabel_logger.addHandler(collect)
    if verbosity > 0:
        nibabel_logger.addHandler(console)
    nibabel_logger.propagate = False
    logging.captureWarnings(True)
    try:
        with warnings.catch_warnings():
            if verbosity == 0:
                warnings.simplefilter("ignore")
            yield collect
    finally:
        logging.captureWarnings(False)
        for logger, level, propagate, handlers in saved:
            for h in list(logger.handlers):
                logger.removeHandler(h)
            for h in handlers:
                logger.addHandler(h)
            logger.setLevel(level)
            logger.propagate = propagate


def _find_scans(settings: Settings) -> list[Scan]:
    from ctadeface.discover import find_scans

    return find_scans(
        settings.bids_dir,
        participant_labels=settings.participant_labels or None,
        session_labels=settings.session_labels or None,
        filters=settings.bids_filters or None,
        skip_validation=settings.skip_validation,
    )


@dataclass(frozen=True)
class Pipeline:
    """What a run needs to deface: its settings (post-processing resolved for the model), the
    model's makers (called once, when the first image needs them) and keys."""

    settings: Settings
    make_segmenter: Callable[[], participant.Segmenter]
    make_verifier: Callable[[], participant.Verifier] | None
    inference: str
    model_key: Mapping[str, str]


def load_pipeline(settings: Settings) -> Pipeline:
    """Resolve the model of ``settings`` (a ModelError when it cannot be used); nothing is
    loaded yet."""
    from ctadeface.segment import FaceSegmenter, inference_request
    from ctadeface.segment.models import resolve_model

    model = resolve_model(settings.model, settings.cache_dir)
    if settings.postprocess is None:
        settings = replace(settings, postprocess=model.postprocess)
    chosen = settings

    def make_segmenter() -> participant.Segmenter:
        return FaceSegmenter(
            model,
            device=chosen.device,
            tta=chosen.tta,
            exact=chosen.exact,
            precision=chosen.precision,
        )

    def make_verifier() -> participant.Verifier:
        from ctadeface.verify.verdict import Verifier

        return Verifier(chosen.face_threshold, chosen.mask_mode, workers=chosen.nprocs)

    return Pipeline(
        settings=settings,
        make_segmenter=make_segmenter,
        make_verifier=make_verifier if settings.verify else None,
        inference=inference_request(model, exact=settings.exact, precision=settings.precision),
        model_key=model.checkpoint_sha256,
    )


def count_statuses(statuses: Iterable[Status]) -> str:
    """``"2 defaced, 1 failed"``: how many of each status, in status order."""
    counts = Counter(statuses)
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))


def exit_code(statuses: Sequence[tuple[Status, int]], mask_mode: str) -> int:
    """The run's exit code from each scan's (status, failure exit code): 1 when a scan is
    identifiable (or face-like in strict mode) or failed, 65 when every one failed unreadable."""
    needs_look = {Status.IDENTIFIABLE} | ({Status.FACE_LIKE} if mask_mode == "strict" else set())
    if any(status in needs_look for status, _ in statuses):
        return EXIT_SOME_FAILED
    failed = [code for status, code in statuses if status == Status.FAILED]
    if not failed:
        return EXIT_OK
    if len(failed) == len(statuses) and all(code == EXIT_DATAERR for code in failed):
        return EXIT_DATAERR
    return EXIT_SOME_FAILED


def _participant(settings: Settings) -> int:
    from ctadeface import participant
    from ctadeface.segment import torch_settings

    scans = _find_scans(settings)
    pipeline = load_pipeline(settings)
    settings = pipeline.settings
    with torch_settings(settings.nprocs):
        results = participant.run(
            settings,
            scans,
            pipeline.make_segmenter,
            inference=pipeline.inference,
            model_key=pipeline.model_key,
            make_verifier=pipeline.make_verifier,
        )
    if settings.dry_run:
        for r in results:
            print(f"{r.status}\t{r.scan.relpath}\t{r.message}")
    summary = count_statuses(r.status for r in results)
    print(f"ctadeface: {len(results)} CT scan(s): {summary}; outputs in {settings.output_dir}")
    flagged = sum(
        r.status == Status.IDENTIFIABLE
        or (r.status == Status.FACE_LIKE and settings.mask_mode == "strict")
        for r in results
    )
    if flagged:
        log.warning(
            "%d scan(s) %s after defacing: see group_report.html after the group level",
            flagged,
            "still identifiable or face-like" if settings.mask_mode == "strict" else "identifiable",
        )
    return exit_code([(r.status, r.exit_code) for r in results], settings.mask_mode)


def _group(settings: Settings) -> int:
    from ctadeface.io import write_text_atomic
    from ctadeface.report import (
        group_report_html,
        group_table,
        read_provenance_for,
        scan_links,
        to_tsv,
    )

    scans = _find_scans(settings)
    rows = group_table(read_provenance_for(settings.output_dir, scans))
    table = settings.output_dir / "group_ct.tsv"
    page = settings.output_dir / "group_report.html"
    if settings.dry_run:
        print(f"would write {table} and {page} with {len(rows)} row(s)")
        return EXIT_OK
    missing = sum(r["status"] == Status.MISSING for r in rows)
    if missing == len(rows):
        raise NoInputError(f"{settings.output_dir}: no participant-level outputs found")
    links = scan_links(settings.output_dir, scans, workers=settings.nprocs)
    write_text_atomic(table, to_tsv(rows))
    write_text_atomic(page, group_report_html(rows, links))
    print(f"ctadeface: {table}: {len(rows)} scan(s), {missing} without outputs; report: {page}")
    return EXIT_OK


@dataclass(frozen=True)
class Command:
    """A parsed command line, ready to run: where its log goes and the work itself.

    Attributes:
        output_dir: the log is written to ``output_dir/logs/`` (not on a dry run).
        name: the log file's prefix (e.g. ``participant``).
        execute: does the work, returns the exit code.
    """

    output_dir: Path
    name: str
    dry_run: bool
    execute: Callable[[], int]


def _write_log(command: Command, collect: _Collect, started: _dt.datetime) -> None:
    from ctadeface.io import write_text_atomic

    if command.dry_run or not collect.lines or not command.output_dir.is_dir():
        return
    name = f"{command.name}-{started.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log"
    try:
        write_text_atomic(command.output_dir / "logs" / name, "\n".join(collect.lines) + "\n")
    except CTADefaceError as e:
        log.warning("could not write the run log: %s", e)


class _Terminated(KeyboardInterrupt):
    """SIGTERM (e.g. a SLURM time limit), unwound like Ctrl-C so temporary files are removed."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated


def _bids_command(argv: Sequence[str] | None) -> Command:
    settings = settings_from_args(build_parser().parse_args(argv), dict(os.environ))
    log.info("ctadeface %s, %s level", __version__, settings.analysis_level)
    run = _participant if settings.analysis_level == "participant" else _group
    return Command(
        settings.output_dir, settings.analysis_level, settings.dry_run, lambda: run(settings)
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the app; return the exit code (``run.py`` passes it to ``sys.exit``)."""
    return run_command(argv, _bids_command)


def run_command(
    argv: Sequence[str] | None, parse: Callable[[Sequence[str] | None], Command]
) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``) with ``parse`` and run the command: logging set
    up and put back, SIGTERM unwound like Ctrl-C, every error one line and its exit code."""
    started = _dt.datetime.now(_dt.UTC)
    one_arena()  # one heap for every thread, set before any worker allocates (allocator.py)
    words = list(sys.argv[1:] if argv is None else argv)
    verbose = sum(len(a) - 1 for a in words if re.fullmatch(r"-v+", a)) + words.count("--verbose")
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    try:
        with _logging(verbose) as collect:
            return _run(argv, parse, verbose, collect, started)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(
    argv: Sequence[str] | None,
    parse: Callable[[Sequence[str] | None], Command],
    verbose: int,
    collect: _Collect,
    started: _dt.datetime,
) -> int:
    command: Command | None = None
    try:
        command = parse(argv)
        return command.execute()
    except CTADefaceError as e:
        log.error("%s", e, exc_info=verbose > 0)
        return e.exit_code
    except KeyboardInterrupt as e:
        log.error("terminated" if isinstance(e, _Terminated) else "interrupted")
        return EXIT_TERMINATED if isinstance(e, _Terminated) else EXIT_INTERRUPTED
    except Exception as e:  # a bug: one line, the traceback with -v
        log.error("unexpected error: %s: %s", type(e).__name__, e, exc_info=True)
        return EXIT_SOME_FAILED
    finally:
        if command is not None:
            _write_log(command, collect, started)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
