"""A DICOM run: every CT series found -> load -> the pipeline of the BIDS App
(``participant.deface_image``) -> a new series, its face mask as a Segmentation object, its
provenance and figure, each series' folder appearing whole (``io.atomic_folder``); then a summary
table and report of all series.

Layout under the output folder (:func:`series_paths`)::

    series-<SeriesNumber>-<id>/      one per input series (<id>: 12 hex of its UID's sha256)
        ct/00001.dcm ...             the defaced series
        seg.dcm                      the face mask (DICOM Segmentation)
        defacing.json                provenance: the BIDS sidecar's "Defacing" record, and the
                                     de-identification applied
        render.png, thumbnail.jpg    the QC figure (with verification)
    summary.tsv, summary.html        one row per series, the group report's columns
    logs/                            one log per run

A rerun skips a series whose folder was made for the same request (input files, model, fill,
mask mode, verification, de-identification) and whose files still match their hashes.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ctadeface import __version__
from ctadeface.deface import Fill
from ctadeface.dicom.deidentify import PROFILES, method_description
from ctadeface.dicom.seg import face_segmentation
from ctadeface.dicom.series import Series
from ctadeface.dicom.tilt import is_tilted, tilt_degrees, untilt
from ctadeface.dicom.volume import load_series
from ctadeface.dicom.write import write_defaced
from ctadeface.errors import CTADefaceError, InputError, ModelError, OutputError, UsageError
from ctadeface.io import (
    atomic_folder,
    remove_stale_temps,
    sha256_file,
    write_text_atomic,
)
from ctadeface.outputs import PROVENANCE_KEY, to_json
from ctadeface.participant import (
    Lazy,
    Segmenter,
    Verifier,
    deface_image,
    provenance_of,
    run_request,
    write_figure,
)
from ctadeface.provenance import OutputHashes, Provenance, Request
from ctadeface.records import from_json
from ctadeface.records import to_json as record_json
from ctadeface.settings import Settings
from ctadeface.status import Status

log = logging.getLogger(__name__)

#: The key of the de-identification applied in ``defacing.json``.
DEIDENTIFICATION_KEY = "Deidentification"
SUMMARY_TSV = "summary.tsv"
SUMMARY_HTML = "summary.html"


@dataclass(frozen=True)
class SeriesPaths:
    """Where one series' outputs go (absolute)."""

    folder: Path
    ct: Path
    seg: Path
    provenance: Path
    figure: Path
    thumbnail: Path


def series_paths_in(folder: Path) -> SeriesPaths:
    """The files of a series' output folder."""
    return SeriesPaths(
        folder=folder,
        ct=folder / "ct",
        seg=folder / "seg.dcm",
        provenance=folder / "defacing.json",
        figure=folder / "render.png",
        thumbnail=folder / "thumbnail.jpg",
    )


def series_name(series: Series) -> str:
    """``series-<SeriesNumber>-<12 hex of sha256(SeriesInstanceUID)>``: readable, unique, and
    nothing of the patient in it."""
    digest = hashlib.sha256(series.uid.encode()).hexdigest()[:12]
    return f"series-{series.number or 0:03d}-{digest}"


def series_paths(output_dir: Path, series: Series) -> SeriesPaths:
    """The output folder of ``series`` under ``output_dir``."""
    return series_paths_in(output_dir / series_name(series))


@dataclass(frozen=True)
class SeriesResult:
    """Outcome of one series: its output folder's name, status, one-line summary, seconds and
    the exit code of a failure."""

    name: str
    source: str
    status: Status
    message: str = ""
    seconds: float = 0.0
    exit_code: int = 0


def series_sha256(series: Series) -> str:
    """sha256 over the sha256s of the series' files (sorted by path)."""
    digest = hashlib.sha256()
    for path in series.files:
        digest.update(bytes.fromhex(sha256_file(path)))
    return digest.hexdigest()


def folder_sha256(folder: Path) -> str:
    """sha256 over the names and sha256s of a folder's files (sorted)."""
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        digest.update(path.name.encode() + b"\0" + bytes.fromhex(sha256_file(path)))
    return digest.hexdigest()


def _request_key(request: Request, deidentify: str) -> str:
    """What the derived UIDs are keyed by: another request, other UIDs."""
    text = json.dumps([record_json(request), deidentify], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def read_record(paths: SeriesPaths) -> tuple[Provenance, str] | None:
    """A series folder's provenance and de-identification mode, or None (absent, unreadable)."""
    try:
        record = json.loads(paths.provenance.read_text(encoding="utf-8"))
        return from_json(Provenance, record[PROVENANCE_KEY]), str(
            record[DEIDENTIFICATION_KEY]["Profile"]
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_up_to_date(paths: SeriesPaths, request: Request, deidentify: str) -> bool:
    """The folder was made for ``request`` and ``deidentify``, and its series and SEG still
    match their recorded sha256."""
    recorded = read_record(paths)
    if recorded is None or recorded[0].request != request or recorded[1] != deidentify:
        return False
    hashes = recorded[0].output_sha256
    try:
        same = hashes.defaced == folder_sha256(paths.ct) and hashes.mask == sha256_file(paths.seg)
    except OSError:
        return False
    if not same:
        log.info("%s changed since it was written; redoing", paths.folder)
    return same


def _description(fill: Fill, settings: Settings, model: str, tilt: float | None) -> str:
    untilted = f", found on an untilted grid (gantry tilt {tilt:.1f} deg)" if tilt else ""
    return (
        f"face removed by ctadeface {__version__}: {settings.mask_mode} mask of model {model}"
        f"{untilted}, voxels replaced by {fill.policy} = {fill.value_hu:.0f} HU"
    )


def deface_series(
    series: Series,
    paths: SeriesPaths,
    request: Request,
    segmenter: Segmenter,
    verifier: Verifier | None,
    settings: Settings,
    deidentify: str,
    resample_tilt: bool = False,
) -> tuple[Status, str]:
    """Load, deface, verify and write one series into its folder (appearing whole); a tilted
    series (with ``resample_tilt``) is defaced on an untilted grid (``ctadeface.dicom.tilt``)."""
    started = _dt.datetime.now(_dt.UTC)
    t0 = time.perf_counter()
    volume = load_series(series, tilt=resample_tilt)
    image = volume.image
    seed = int(request.input_sha256[:8], 16)
    source = series.files[0].parent
    tilted = untilt(image) if is_tilted(image.affine) else None
    work = tilted.image if tilted is not None else image
    result = deface_image(work, settings, segmenter, verifier, seed=seed, source=source)
    mask, defaced = result.mask, result.defaced
    if tilted is not None:
        mask, defaced = tilted.back(mask), tilted.back(defaced)
    model = segmenter.describe()
    key = _request_key(request, deidentify)
    with atomic_folder(paths.folder) as tmp:
        out = series_paths_in(tmp)
        tilt = tilt_degrees(image.affine) if tilted is not None else None
        files = write_defaced(
            volume,
            defaced,
            mask,
            out.ct,
            key=key,
            description=_description(result.fill, settings, model.model, tilt),
            deidentify=deidentify == "basic",
        )
        seg = face_segmentation(volume, files, mask, key=key, version=__version__)
        seg.save_as(out.seg)
        if result.figure is not None:
            write_figure(result.figure, out.figure, out.thumbnail)
        provenance = provenance_of(
            result,
            mask,
            abs(float(np.linalg.det(image.affine[:3, :3]))),  # a tilted grid's voxels too
            segmenter,
            settings,
            request,
            started=started,
            seconds=time.perf_counter() - t0,
            outputs=OutputHashes(defaced=folder_sha256(out.ct), mask=sha256_file(out.seg)),
        )
        deidentification: dict[str, Any] = {"Profile": deidentify}
        if deidentify == "basic":
            deidentification["Method"] = method_description()
        record = {PROVENANCE_KEY: record_json(provenance), DEIDENTIFICATION_KEY: deidentification}
        write_text_atomic(out.provenance, to_json(record))
    return (
        result.status,
        f"{len(files)} file(s), mask {provenance.mask_volume_ml:.1f} ml, fill {result.fill.policy}",
    )


def run(
    settings: Settings,
    series: Sequence[Series],
    make_segmenter: Callable[[], Segmenter],
    *,
    inference: str,
    deidentify: str,
    resample_tilt: bool = False,
    model_key: Mapping[str, str] | None = None,
    make_verifier: Callable[[], Verifier] | None = None,
) -> list[SeriesResult]:
    """Deface every series into ``settings.output_dir``; one series' failure is recorded and
    the others go on (the model, the output folder and usage errors end the run).
    ``resample_tilt``: deface gantry-tilted series on an untilted grid instead of refusing them.
    """
    if deidentify not in PROFILES:
        raise UsageError(f"--deidentify {deidentify}: choose one of {', '.join(PROFILES)}")
    if not settings.dry_run:
        for stale in remove_stale_temps(settings.output_dir):
            log.info("removed a temporary file left by a killed run: %s", stale)
    segmenter = Lazy(make_segmenter)
    verifier = Lazy(make_verifier)
    results = []
    for item in series:
        t0 = time.perf_counter()
        source = str(item.files[0].parent)
        name = "?"
        try:
            paths = series_paths(settings.output_dir, item)
            name = paths.folder.name
            request = run_request(
                settings, series_sha256(item), model_key or {}, verifier.wanted, inference
            )
            if not settings.overwrite and is_up_to_date(paths, request, deidentify):
                results.append(SeriesResult(name, source, Status.SKIPPED, "outputs up to date"))
                log.info("%s (%s): skipped, outputs up to date", source, name)
                continue
            if settings.dry_run:
                results.append(
                    SeriesResult(name, source, Status.PLANNED, f"would write {paths.folder}")
                )
                continue
            got = segmenter.get()
            if got is None:
                raise UsageError("no segmenter: a DICOM run needs a model")
            status, summary = deface_series(
                item, paths, request, got, verifier.get(), settings, deidentify, resample_tilt
            )
            seconds = time.perf_counter() - t0
            results.append(SeriesResult(name, source, status, summary, seconds))
            log.info("%s -> %s: %s in %.1f s (%s)", source, name, status, seconds, summary)
        except CTADefaceError as e:
            if isinstance(e, ModelError | OutputError | UsageError):
                raise
            message = str(e) if source in str(e) else f"{source}: {e}"
            results.append(_failed(name, source, message, e.exit_code, t0))
        except OSError as e:
            results.append(
                _failed(name, source, f"{source}: {e.strerror or e}", InputError.exit_code, t0)
            )
        except (Exception, MemoryError) as e:  # a library failure: keep the others going
            message = f"{source}: unexpected error ({type(e).__name__}: {str(e)[:200]})"
            results.append(_failed(name, source, message, InputError.exit_code, t0))
    return results


def _failed(name: str, source: str, message: str, code: int, t0: float) -> SeriesResult:
    log.error("%s", message)
    log.debug("traceback of the failure above", exc_info=True)
    return SeriesResult(name, source, Status.FAILED, message, time.perf_counter() - t0, code)


def write_summary(output_dir: Path, results: Sequence[SeriesResult]) -> tuple[Path, Path]:
    """``summary.tsv`` and ``summary.html`` for the series of this run: each row from its
    folder's provenance (failed series as missing); returns their paths."""
    from ctadeface.report import Links, group_report_html, provenance_row, sort_rows, to_tsv
    from ctadeface.report.table import NA

    def rel(path: Path) -> str | None:
        return path.relative_to(output_dir).as_posix() if path.is_file() else None

    rows = []
    links = {}
    for result in results:
        paths = series_paths_in(output_dir / result.name)
        recorded = read_record(paths) if result.status != Status.FAILED else None
        row = provenance_row(recorded[0] if recorded else None, result.name, NA, result.name)
        rows.append(row)
        links[result.name] = Links(rel(paths.figure), rel(paths.thumbnail), rel(paths.provenance))
    rows = sort_rows(rows)
    table, page = output_dir / SUMMARY_TSV, output_dir / SUMMARY_HTML
    write_text_atomic(table, to_tsv(rows))
    html = group_report_html(rows, links, title="ctadeface DICOM report", table_file=SUMMARY_TSV)
    write_text_atomic(page, html)
    return table, page
