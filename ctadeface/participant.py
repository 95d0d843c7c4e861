"""Participant level: for each CT scan, load -> segment -> deface -> verify -> write, one scan at a
time, and record its provenance.

A scan that fails is recorded with its one-line reason and the loop goes on. The model is loaded
once, and only when a scan actually needs it (an up-to-date rerun never loads it).
"""

from __future__ import annotations

import datetime as _dt
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import numpy as np

from ctadeface import __version__
from ctadeface.allocator import release
from ctadeface.body import bounding_box
from ctadeface.deface import (
    Fill,
    PostProcess,
    StrictParams,
    apply_fill,
    choose_fill,
    postprocess,
    strict_mask,
)
from ctadeface.discover import Scan
from ctadeface.errors import CTADefaceError, InputError, ModelError, OutputError, UsageError
from ctadeface.io import (
    CTImage,
    load_ct,
    remove_stale_temps,
    sha256_file,
    to_hu,
    write_bytes_atomic,
    write_image_atomic,
    write_text_atomic,
)
from ctadeface.outputs import (
    OutputPaths,
    citation,
    dataset_description,
    defaced_sidecar,
    is_up_to_date,
    mask_sidecar,
    output_paths,
    to_json,
)
from ctadeface.provenance import ModelRecord, OutputHashes, Provenance, Request
from ctadeface.settings import Settings
from ctadeface.status import Status
from ctadeface.verify.figure import thumbnail_jpeg
from ctadeface.verify.render import Patch
from ctadeface.verify.verdict import Verification

log = logging.getLogger(__name__)

#: The fixed post-processing of mask-definition.md, applied when settings.postprocess is on.
POSTPROCESS = PostProcess()
#: The strict mode's cut (``--mask strict``).
STRICT = StrictParams()


class Segmenter(Protocol):
    """What the participant loop needs of ``segment.FaceSegmenter``."""

    def predict(
        self,
        volume: np.ndarray,
        spacing: tuple[float, float, float],
        *,
        slope: float = 1.0,
        inter: float = 0.0,
        affine: np.ndarray | None = None,
    ) -> np.ndarray: ...

    def describe(self) -> ModelRecord: ...

    def versions(self) -> Mapping[str, str]: ...


class Verifier(Protocol):
    """What the participant loop needs of ``verify``: render, detect, draw (None: off)."""

    def __call__(
        self,
        original_hu: np.ndarray,
        defaced: Patch,
        mask: np.ndarray,
        affine: np.ndarray,
        /,
    ) -> tuple[Verification, bytes]: ...


@dataclass(frozen=True)
class ScanResult:
    """Outcome of one scan: its status, a one-line summary, seconds, and the exit code of a
    failure."""

    scan: Scan
    status: Status
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


T = TypeVar("T")


class Lazy(Generic[T]):
    """Creates an expensive object (a loaded network) on first use, at most once."""

    def __init__(self, factory: Callable[[], T] | None) -> None:
        self._factory = factory
        self._made: T | None = None

    @property
    def wanted(self) -> bool:
        """Whether there is anything to make (a verifier is None with --no-verify)."""
        return self._factory is not None

    def get(self) -> T | None:
        if self._made is None and self._factory is not None:
            self._made = self._factory()
        return self._made


class ReadAhead:
    """Reads the next scan while the current one is segmented: one background thread, at most
    one image ahead, so memory holds two images at most."""

    def __init__(self, load: Callable[[Path], CTImage] = load_ct) -> None:
        self._load = load
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ctadeface-read")
        self._next: tuple[Path, Future[CTImage]] | None = None

    def load(self, path: Path, then: Path | None = None) -> CTImage:
        """``path``'s image (read ahead if it was asked for); then start reading ``then``."""
        if self._next is not None and self._next[0] == path:
            future = self._next[1]
            self._next = None
            image = future.result()
        else:
            self._drop()
            image = self._load(path)
        if then is not None:
            self._next = (then, self._pool.submit(self._load, then))
        return image

    def _drop(self) -> None:
        if self._next is not None:
            self._next[1].cancel()
            self._next = None

    def close(self) -> None:
        self._drop()
        self._pool.shutdown(wait=False, cancel_futures=True)


def run_request(
    settings: Settings,
    input_sha256: str,
    model_key: Mapping[str, str],
    verified: bool,
    inference: str,
) -> Request:
    """What an up-to-date output must have been made from: input, model, fill, TTA, strategy
    (``inference``, from ``segment.inference_request``), post-processing, verification."""
    return Request(
        input_sha256=input_sha256,
        model_checkpoint_sha256=tuple(sorted(model_key.values())),
        fill=settings.fill,
        mask_mode=settings.mask_mode,
        tta=settings.tta,
        inference=inference,
        post_process=bool(settings.postprocess),
        verified=verified,
    )


@dataclass(frozen=True, eq=False)
class Defacing:
    """What the pipeline made of one image (before anything is written).

    Attributes:
        mask: bool, the image's shape: the voxels replaced.
        defaced: the image's ``data`` with them replaced (its dtype and units).
        fill: what replaced them; status: ``defaced``, ``mask-empty`` or the verdict's.
        verification, figure: the verdict and its QC figure (PNG), None without a verifier.
    """

    mask: np.ndarray
    defaced: np.ndarray
    fill: Fill
    status: Status
    verification: Verification | None
    figure: bytes | None


def deface_image(
    image: CTImage,
    settings: Settings,
    segmenter: Segmenter,
    verifier: Verifier | None,
    *,
    seed: int,
    source: Path,
) -> Defacing:
    """Segment, post-process (and cut in strict mode), fill and verify one image, whatever
    format it came from. ``seed`` seeds the noise fill; ``source`` names the image in warnings.
    Without a verifier ``image.data`` is filled in place (the source values are not needed)."""
    mask = segmenter.predict(
        image.data, image.spacing, slope=image.slope, inter=image.inter, affine=image.affine
    )
    mask = np.asarray(mask, dtype=bool)
    if settings.postprocess:
        mask = postprocess(mask, image.hu_view(), image.spacing, POSTPROCESS, in_place=True)
    seal = None
    if settings.mask_mode == "strict":
        cut = strict_mask(mask, image.hu_view(), image.spacing, image.affine, STRICT)
        mask, seal = cut.mask, cut.seal
    fill = choose_fill(image, settings.fill)
    hu = image.hu() if verifier is not None else None  # the source, for the before renders
    defaced = apply_fill(image, mask, fill, seed=seed, in_place=hu is None, seal=seal)
    del seal
    status = Status.DEFACED
    if not mask.any():
        status = Status.MASK_EMPTY
        log.warning("%s: the face mask is empty (no face in the field of view?)", source)
    verification: Verification | None = None
    figure: bytes | None = None
    if verifier is not None and hu is not None:
        patch = defaced_patch(image, defaced, mask)
        verification, figure = verifier(hu, patch, mask, image.affine)
        del patch
        if verification.status != Status.DEFACED:
            status = verification.status
            _warn(source, verification)
    release()  # what the stages freed leaves the process before the outputs and the next scan
    return Defacing(mask, defaced, fill, status, verification, figure)


def defaced_patch(image: CTImage, defaced: np.ndarray, mask: np.ndarray) -> Patch:
    """The defaced image for the verifier: its HU in the mask's box, where alone it differs
    from ``image`` (no second volume in HU)."""
    box = bounding_box(mask)
    return Patch(box, to_hu(defaced[box], image.slope, image.inter))


def write_figure(figure: bytes, path: Path, thumbnail: Path) -> None:
    """The QC figure (PNG) and its thumbnail; a bad figure costs its thumbnail, not the scan."""
    write_bytes_atomic(path, figure)
    try:
        write_bytes_atomic(thumbnail, thumbnail_jpeg(figure))
    except ValueError as e:
        log.warning("%s: no thumbnail: %s", path, e)


def provenance_of(
    result: Defacing,
    mask: np.ndarray,
    voxel_mm3: float,
    segmenter: Segmenter,
    settings: Settings,
    request: Request,
    *,
    started: _dt.datetime,
    seconds: float,
    outputs: OutputHashes,
) -> Provenance:
    """The provenance of one defaced image: ``mask`` as written (voxels of ``voxel_mm3``),
    started at ``started`` (UTC), ``seconds`` of its own, outputs with these sha256."""
    n_voxels = int(np.count_nonzero(mask))
    return Provenance(
        software={"ctadeface": __version__, **segmenter.versions()},
        model=segmenter.describe(),
        fill=result.fill,
        post_processing=POSTPROCESS if settings.postprocess else None,
        strict=STRICT if settings.mask_mode == "strict" else None,
        verification=result.verification,
        start_time=started.isoformat(timespec="seconds"),
        duration_seconds=round(seconds, 3),
        input_sha256=request.input_sha256,
        request=request,
        output_sha256=outputs,
        mask_voxels=n_voxels,
        mask_volume_ml=round(n_voxels * voxel_mm3 / 1000.0, 3),
        status=result.status,
    )


def deface_scan(
    scan: Scan,
    paths: OutputPaths,
    request: Request,
    get_segmenter: Callable[[], Segmenter | None],
    get_verifier: Callable[[], Verifier | None],
    settings: Settings,
    load: Callable[[Path], CTImage] = load_ct,
) -> tuple[Status, str]:
    """Load, segment, fill, verify and write one scan; return (status, one-line summary).

    The segmenter and verifier are asked for only after the image loaded, so a run whose
    inputs are all unreadable never loads a network.
    """
    started = _dt.datetime.now(_dt.UTC)
    t0 = time.perf_counter()
    image = load(scan.path)
    loading = time.perf_counter()  # models load once per run; their time is not this scan's
    segmenter = get_segmenter()
    verifier = get_verifier()
    t0 += time.perf_counter() - loading
    if segmenter is None:
        raise UsageError("no segmenter: the participant level needs a model")
    seed = int(request.input_sha256[:8], 16)
    result = deface_image(image, settings, segmenter, verifier, seed=seed, source=scan.path)
    mask, defaced, figure = result.mask, result.defaced, result.figure
    mask_sha256 = write_image_atomic(paths.mask, mask.view(np.uint8), image)
    write_text_atomic(paths.mask_json, to_json(mask_sidecar(scan)))
    defaced_sha256 = write_image_atomic(paths.defaced, defaced, image)
    if figure is not None:
        write_figure(figure, paths.figure, paths.thumbnail)
    provenance = provenance_of(
        result,
        mask,
        float(np.prod(image.spacing)),
        segmenter,
        settings,
        request,
        started=started,
        seconds=time.perf_counter() - t0,
        outputs=OutputHashes(defaced=defaced_sha256, mask=mask_sha256),
    )
    sidecar, removed = defaced_sidecar(
        scan, provenance, remove_demographics=settings.remove_demographics
    )
    write_text_atomic(paths.defaced_json, to_json(sidecar))
    gone = f"; removed from sidecar: {', '.join(removed)}" if removed else ""
    seen = ""
    verification, fill = result.verification, result.fill
    if verification is not None:
        identity = verification.identity
        seen = (
            f", identity rank 1 on {identity.rank1_views}/{identity.views_tested} yaws "
            f"(p {identity.p:.2g}), MTCNN p {verification.face_p_before:.2f} -> "
            f"{verification.face_p_after:.2f}"
        )
    return (
        result.status,
        f"mask {provenance.mask_volume_ml:.1f} ml, fill {fill.policy} = {fill.value_hu:.0f} HU"
        f"{seen}{gone}",
    )


def _warn(source: Path, verification: Verification) -> None:
    """One warning line for a scan whose verdict needs a look."""
    identity = verification.identity
    if verification.status == Status.IDENTIFIABLE:
        log.warning(
            "%s: still identifiable after defacing (rank 1 on %d of %d yaws, p %.2g); outputs "
            "kept for review",
            source,
            identity.rank1_views,
            identity.views_tested,
            identity.p,
        )
    elif verification.mask_mode == "strict":
        log.warning(
            "%s: a face detector still fires after strict defacing (MTCNN p %.2f, dlib faces on "
            "%d renders); outputs kept for review",
            source,
            verification.face_p_after,
            verification.dlib_faces_after,
        )
    else:
        log.info(
            "%s: face-like after defacing (MTCNN p %.2f, dlib faces on %d renders) but not "
            "identifiable: the facial skeleton the face mask keeps",
            source,
            verification.face_p_after,
            verification.dlib_faces_after,
        )


def run(
    settings: Settings,
    scans: Sequence[Scan],
    make_segmenter: Callable[[], Segmenter],
    *,
    inference: str,
    model_key: Mapping[str, str] | None = None,
    make_verifier: Callable[[], Verifier] | None = None,
) -> list[ScanResult]:
    """Deface every scan; never raises for a single scan's failure.

    Args:
        settings: the run's settings.
        scans: from ``discover.find_scans``.
        make_segmenter: called at most once, when the first scan needs the model.
        inference: the strategy the segmenter will run (``segment.inference_request``);
            outputs made by another are redone.
        model_key: checkpoint sha256s of the model (outputs made by another model are redone).
        make_verifier: called at most once, when the first scan is verified (None: no
            verification).
    """
    if not settings.dry_run:
        prepare_output(settings)
    segmenter = Lazy(make_segmenter)
    verifier = Lazy(make_verifier)
    reader = ReadAhead()
    try:
        return _run_scans(settings, scans, segmenter, verifier, reader, model_key or {}, inference)
    finally:
        reader.close()


def _run_scans(
    settings: Settings,
    scans: Sequence[Scan],
    segmenter: Lazy[Segmenter],
    verifier: Lazy[Verifier],
    reader: ReadAhead,
    model_key: Mapping[str, str],
    inference: str,
) -> list[ScanResult]:
    results: list[ScanResult] = []
    for index, scan in enumerate(scans):
        t0 = time.perf_counter()
        paths = output_paths(settings.output_dir, scan)
        try:
            if scan.problem:
                raise InputError(scan.problem)
            request = run_request(
                settings, sha256_file(scan.path), model_key, verifier.wanted, inference
            )
            if not settings.overwrite and is_up_to_date(paths, request):
                results.append(ScanResult(scan, Status.SKIPPED, "outputs up to date"))
                log.info("%s: skipped, outputs up to date", scan.relpath)
                continue
            if settings.dry_run:
                results.append(ScanResult(scan, Status.PLANNED, f"would write {paths.defaced}"))
                continue
            following = next((s.path for s in scans[index + 1 :] if not s.problem), None)

            def load(path: Path, then: Path | None = following) -> CTImage:
                return reader.load(path, then)

            status, summary = deface_scan(
                scan, paths, request, segmenter.get, verifier.get, settings, load
            )
            seconds = time.perf_counter() - t0
            results.append(ScanResult(scan, status, summary, seconds))
            log.info("%s: %s in %.1f s (%s)", scan.relpath, status, seconds, summary)
        except CTADefaceError as e:
            if _is_fatal(e):
                raise
            message = str(e) if str(scan.path) in str(e) else f"{scan.path}: {e}"
            results.append(_failed(scan, message, e.exit_code, t0))
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
    return ScanResult(scan, Status.FAILED, message, time.perf_counter() - t0, exit_code)


def _is_fatal(error: CTADefaceError) -> bool:
    """Errors that no other scan can escape (the model, the output folder, an option the
    segmenter refuses) end the run."""
    return isinstance(error, ModelError | OutputError | UsageError)
