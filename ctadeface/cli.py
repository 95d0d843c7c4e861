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
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from ctadeface import __version__
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
    from ctadeface.discover import Scan

log = logging.getLogger("ctadeface")
_NIBABEL_LOGGER = "nibabel.global"


def build_parser() -> argparse.ArgumentParser:
    """The one argument parser (fMRIPrep/MRIQC spelling; ``_`` variants accepted)."""
    from ctadeface.deface import FILL_POLICIES

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
    m.add_argument(
        "--remove-demographics", "--remove_demographics", action="store_true",
        help="also remove PatientSex, PatientAge, PatientWeight, PatientSize from sidecars",
    )  # fmt: skip
    r = p.add_argument_group("running")
    r.add_argument(
        "--nprocs", "--n_cpus", "--n-cpus", type=int, metavar="N",
        help="CPU threads (default: all available)",
    )  # fmt: skip
    r.add_argument("-w", "--work-dir", "--work_dir", type=Path, help="scratch folder")
    r.add_argument("--overwrite", action="store_true", help="redo scans with up-to-date outputs")
    r.add_argument(
        "--dry-run", "--dry_run", action="store_true", help="list what would be done; write nothing"
    )
    r.add_argument("-v", "--verbose", action="count", default=0, help="more output (repeatable)")
    r.add_argument("--version", action="version", version=f"ctadeface {__version__}")
    return p


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
        model=args.model,
        device=args.device,
        fill=args.fill,
        mask_mode=args.mask_mode,
        tta=args.tta,
        exact=args.exact,
        precision=args.precision,
        postprocess=args.postprocess,
        nprocs=check_nprocs(args.nprocs),
        work_dir=args.work_dir.expanduser().resolve() if args.work_dir else None,
        overwrite=args.overwrite,
        dry_run=args.dry_run,
        remove_demographics=args.remove_demographics,
        verify=args.verify,
        face_threshold=check_face_threshold(args.face_threshold),
        verbosity=args.verbose,
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


def _participant(settings: Settings) -> int:
    from ctadeface import participant
    from ctadeface.segment import FaceSegmenter, inference_request, torch_settings
    from ctadeface.segment.models import resolve_model

    scans = _find_scans(settings)
    model = resolve_model(settings.model, settings.cache_dir)
    if settings.postprocess is None:
        settings = replace(settings, postprocess=model.postprocess)

    def make_segmenter() -> participant.Segmenter:
        return FaceSegmenter(
            model,
            device=settings.device,
            tta=settings.tta,
            exact=settings.exact,
            precision=settings.precision,
        )

    def make_verifier() -> participant.Verifier:
        from ctadeface.verify.verdict import Verifier

        return Verifier(settings.face_threshold, settings.mask_mode)

    with torch_settings(settings.nprocs):
        results = participant.run(
            settings,
            scans,
            make_segmenter,
            inference=inference_request(model, exact=settings.exact, precision=settings.precision),
            model_key=model.checkpoint_sha256,
            make_verifier=make_verifier if settings.verify else None,
        )
    if settings.dry_run:
        for r in results:
            print(f"{r.status}\t{r.scan.relpath}\t{r.message}")
    counts = Counter(r.status for r in results)
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    print(f"ctadeface: {len(results)} CT scan(s): {summary}; outputs in {settings.output_dir}")
    needs_look = {Status.IDENTIFIABLE} | (
        {Status.FACE_LIKE} if settings.mask_mode == "strict" else set()
    )
    flagged = [r for r in results if r.status in needs_look]
    if flagged:
        log.warning(
            "%d scan(s) %s after defacing: see group_report.html after the group level",
            len(flagged),
            "still identifiable or face-like" if settings.mask_mode == "strict" else "identifiable",
        )
        return EXIT_SOME_FAILED
    failed = [r for r in results if r.status == Status.FAILED]
    if not failed:
        return EXIT_OK
    if len(failed) == len(results) and all(r.exit_code == EXIT_DATAERR for r in failed):
        return EXIT_DATAERR
    return EXIT_SOME_FAILED


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


def _write_log(settings: Settings, collect: _Collect, started: _dt.datetime) -> None:
    from ctadeface.io import write_text_atomic

    if settings.dry_run or not collect.lines or not settings.output_dir.is_dir():
        return
    name = f"{settings.analysis_level}-{started.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log"
    try:
        write_text_atomic(settings.output_dir / "logs" / name, "\n".join(collect.lines) + "\n")
    except CTADefaceError as e:
        log.warning("could not write the run log: %s", e)


class _Terminated(KeyboardInterrupt):
    """SIGTERM (e.g. a SLURM time limit), unwound like Ctrl-C so temporary files are removed."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated


def main(argv: Sequence[str] | None = None) -> int:
    """Run the app; return the exit code (``run.py`` passes it to ``sys.exit``)."""
    started = _dt.datetime.now(_dt.UTC)
    words = list(sys.argv[1:] if argv is None else argv)
    verbose = sum(len(a) - 1 for a in words if re.fullmatch(r"-v+", a)) + words.count("--verbose")
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    try:
        with _logging(verbose) as collect:
            return _run(argv, verbose, collect, started)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(argv: Sequence[str] | None, verbose: int, collect: _Collect, started: _dt.datetime) -> int:
    settings: Settings | None = None
    try:
        args = build_parser().parse_args(argv)
        settings = settings_from_args(args, dict(os.environ))
        log.info("ctadeface %s, %s level", __version__, settings.analysis_level)
        if settings.analysis_level == "participant":
            return _participant(settings)
        return _group(settings)
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
        if settings is not None:
            _write_log(settings, collect, started)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
