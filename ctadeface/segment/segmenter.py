"""The face segmenter: one object owns the loaded nnU-Net v2 model for the whole run.

``FaceSegmenter.predict`` takes a scan as stored (axes i, j, k) and returns its face mask. It
feeds the model the array the way nnU-Net's own NIfTI readers (``SimpleITKIO``, ``NibabelIO``)
do, i.e. the stored array transposed to (k, j, i) with the spacing reversed, turned first to the
model's input orientation when the model declares one, by one of two strategies:

- :class:`~ctadeface.segment.fast.FastStrategy` (default): nnU-Net's resampling, tiles and
  weights computed only where they reach the body;
- :class:`~ctadeface.segment.exact.ExactStrategy` (``exact=True``, or a model whose
  preprocessing the fast strategy cannot reproduce): nnU-Net's own predictor over the whole
  field of view, the mask ``nnUNetv2_predict`` writes.

The strategy is chosen from the model's plans before anything is loaded
(:func:`inference_request` says which, without loading). No subprocess, no temporary files.
Torch's process-wide settings (threads, cuDNN autotuning) are the run's: :func:`torch_settings`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import pickle
import time
import zipfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from ctadeface.errors import InputError, ModelError, UsageError
from ctadeface.provenance import ModelRecord
from ctadeface.segment import fast
from ctadeface.segment.exact import ExactStrategy
from ctadeface.segment.localise import Superior, superior_of, superior_of_codes
from ctadeface.segment.models import ModelSpec
from ctadeface.segment.network import ModelConfig, configuration, numpy_globals, read_config
from ctadeface.segment.orientation import Orientation
from ctadeface.settings import PRECISIONS

log = logging.getLogger(__name__)

#: The largest grid nnU-Net may resample a scan to (about 1.6 GB of float32 per channel).
MAX_RESAMPLED_VOXELS = 4.0e8

#: nnU-Net's sliding-window step (a fraction of the patch), as ``nnUNetv2_predict``'s default.
TILE_STEP_SIZE = 0.5

#: nnU-Net image readers whose array is the stored NIfTI array transposed (2, 1, 0), spacing
#: reversed (no reorientation): the only ones whose input we can reproduce from (hu, spacing).
SUPPORTED_READERS = frozenset({"SimpleITKIO", "NibabelIO"})


class Strategy(Protocol):
    """How a loaded model turns one scan into a mask; arrays in nnU-Net's (k, j, i) order."""

    description: str
    precision: str

    @property
    def spacing(self) -> tuple[float, ...]:
        """The model grid, mm per axis (k, j, i)."""
        ...

    def segment(
        self,
        kji: np.ndarray,
        spacing: tuple[float, ...],
        slope: float,
        inter: float,
        *,
        up: Superior | None = None,
        out: np.ndarray,
    ) -> None:
        """The bool mask of ``kji``, written into ``out``: an all-False bool array of its shape
        (any strides, e.g. a view of the stored mask turned to the model's orientation)."""
        ...


def choose_device(device: str) -> torch.device:
    """``auto`` -> ``cuda`` when available else ``cpu``; ``cpu``; ``cuda`` or ``cuda:N`` (must be
    available). Raises UsageError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: no CUDA device is available here")
        try:
            return torch.device(device)
        except RuntimeError as err:
            raise UsageError(f"--device {device}: {err}") from err
    raise UsageError(f"--device {device}: use auto, cpu, cuda or cuda:N")


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); elsewhere bf16 is
    emulated and slower than float32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def choose_precision(precision: str, device: torch.device) -> str:
    """The fast strategy's network precision: ``auto`` is ``fp16`` autocast on CUDA (as nnU-Net
    does), ``bf16`` autocast on CPUs with native bfloat16, else ``fp32``. Raises UsageError."""
    if precision not in PRECISIONS:
        raise UsageError(f"--precision {precision}: use one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        if precision == "fp16" and device.type != "cuda":
            raise UsageError("--precision fp16 needs a CUDA device; use bf16 or fp32 on CPU")
        return precision
    if device.type == "cuda":
        return "fp16"
    return "bf16" if native_bf16() else "fp32"


@contextlib.contextmanager
def torch_settings(nprocs: int | None) -> Iterator[None]:
    """Torch's process-wide settings for a run, restored afterwards: ``nprocs`` CPU threads
    (None: torch's default), and cuDNN autotuning (nnU-Net's choice: every tile has one shape,
    so the kernels are tuned once)."""
    threads, benchmark = torch.get_num_threads(), torch.backends.cudnn.benchmark
    try:
        if nprocs is not None:
            torch.set_num_threads(nprocs)
        torch.backends.cudnn.benchmark = True
        yield
    finally:
        torch.set_num_threads(threads)
        torch.backends.cudnn.benchmark = benchmark


def check_checkpoint_globals(path: Path) -> None:
    """Refuse a checkpoint whose pickle references Python globals other than numpy scalars.

    Raises ModelError naming the file and the first offending globals.
    """
    try:
        _, unsafe = numpy_globals(path)
    except (OSError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        raise ModelError(f"checkpoint {path} is not a readable torch checkpoint ({err})") from err
    if unsafe:
        raise ModelError(
            f"refusing checkpoint {path}: it holds Python objects ({', '.join(unsafe[:3])}) "
            "that could run code when loaded; use a model from a source you trust and check it"
        )


def model_config(model: ModelSpec) -> ModelConfig:
    """The inference settings of ``model``'s plans (no weights read), after checking that a
    face model can run on them: a supported image reader, no cascade, one input channel.
    Raises ModelError."""
    folder = model.folder
    try:
        plans = json.loads((folder / "plans.json").read_text(encoding="utf-8"))
        dataset = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
        config = configuration(plans, model.configuration)
        settings = read_config(plans, dataset, model.configuration, ())
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelError(f"model {folder} cannot be loaded: {err}") from err
    reader = plans.get("image_reader_writer", "SimpleITKIO")
    if reader not in SUPPORTED_READERS:
        raise ModelError(
            f"model {folder} reads images with {reader}; only models using "
            f"{' or '.join(sorted(SUPPORTED_READERS))} are supported"
        )
    if config.get("previous_stage") is not None:
        raise ModelError(f"model {folder} is a cascade stage; not supported")
    channels = dataset.get("channel_names", dataset.get("modality"))
    if channels is not None and len(channels) != 1:
        raise ModelError(
            f"model {folder} takes {len(channels)} input channels; a face model takes one (CT)"
        )
    return settings


def _why_exact(model: ModelSpec, exact: bool) -> str:
    """Why the exact strategy runs ('' for the fast one); checks the model (ModelError)."""
    why = fast.unsupported(model_config(model))
    return "asked for (--exact)" if exact else why


def inference_request(model: ModelSpec, *, exact: bool, precision: str) -> str:
    """The strategy a :class:`FaceSegmenter` of these arguments will run, as the run's request
    records it (``exact``, or ``fast, precision P`` with P as asked), read from the plans
    without loading the model. Raises ModelError."""
    return "exact" if _why_exact(model, exact) else f"fast, precision {precision}"


def library_versions() -> dict[str, str]:
    """Versions of the libraries the segmenter runs on (torch, nnU-Net, its architectures)."""
    out = {"torch": str(torch.__version__)}
    for dist in ("nnunetv2", "dynamic_network_architectures"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:  # pragma: no cover - installed with the app
            out[dist] = "unknown"
    return out


class FaceSegmenter:
    """Owns one loaded model; segments scans one after another.

    ``device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``. ``tta``: mirroring test-time
    augmentation (``nnUNetv2_predict`` default on, CTA-DEFACE ran with it off). ``exact``:
    nnU-Net's own pipeline over the whole field of view instead of the fast strategy (see the
    module docstring). ``precision``: the fast strategy's network arithmetic (see
    :func:`choose_precision`; the exact strategy always does what nnU-Net does). Checkpoints
    not verified by a pinned sha256 are checked to hold no Python objects beyond numpy scalars
    before anything unpickles them.
    """

    def __init__(
        self,
        model: ModelSpec,
        *,
        device: str = "auto",
        tta: bool = False,
        exact: bool = False,
        precision: str = "auto",
    ) -> None:
        t0 = time.perf_counter()
        self.model = model
        self.tta = tta
        self.device = choose_device(device)
        asked_precision = choose_precision(precision, self.device)
        if not model.pinned:  # pinned checkpoints were verified by sha256 in resolve_model
            for relpath in model.checkpoint_sha256:
                check_checkpoint_globals(model.folder / relpath)
        why = _why_exact(model, exact)
        self.strategy: Strategy
        if why:
            if not exact:
                log.info("model %s: %s; using nnU-Net's exact pipeline", model.name, why)
            self.strategy = ExactStrategy(
                model, self.device, tta=tta, tile_step_size=TILE_STEP_SIZE
            )
        else:
            self.strategy = fast.FastStrategy(
                model,
                self.device,
                tta=tta,
                precision=asked_precision,
                tile_step_size=TILE_STEP_SIZE,
            )
        self.load_seconds = time.perf_counter() - t0
        log.info(
            "loaded model %s (%s, folds %s) on %s, tta %s, %s, in %.2f s",
            model.name,
            model.folder,
            ",".join(model.folds),
            self.device,
            "on" if tta else "off",
            self.strategy.description if self.exact else f"fast path, {self.precision}",
            self.load_seconds,
        )

    @property
    def exact(self) -> bool:
        """Whether nnU-Net's own pipeline runs (asked for, or needed by the model)."""
        return isinstance(self.strategy, ExactStrategy)

    @property
    def precision(self) -> str:
        """The network arithmetic: fp32, bf16, fp16, or ``as nnU-Net`` (exact strategy)."""
        return self.strategy.precision

    def predict(
        self,
        volume: np.ndarray,
        spacing: tuple[float, float, float],
        *,
        slope: float = 1.0,
        inter: float = 0.0,
        affine: np.ndarray | None = None,
        slab: bool = True,
    ) -> np.ndarray:
        """The face mask of one scan.

        ``volume``: 3D, array order as stored on disk (i, j, k), in stored units (HU = stored *
        ``slope`` + ``inter``; pass HU with the defaults). ``spacing``: mm per array axis (i, j,
        k). ``affine``: voxel -> world RAS+ mm; required by a model that declares an input
        orientation (``ModelSpec.orientation``): the array is turned to it (axis permutation and
        flips, a view) and segmented into the mask turned the same way (a view). Returns a bool
        array of the same shape, True = face (any non-background label); it has the memory order
        of ``volume`` (Fortran for a NIfTI loaded by nibabel). ``slab``: with the affine, only
        the head slab is segmented (:mod:`ctadeface.segment.localise`); False: the whole field
        of view (to compare).
        """
        if volume.ndim != 3:
            raise ValueError(f"expected a 3D image, got shape {volume.shape}")
        if len(spacing) != 3 or min(spacing) <= 0:
            raise ValueError(f"expected three positive spacings (mm), got {spacing}")
        codes = self.model.orientation
        fortran = volume.flags.f_contiguous and not volume.flags.c_contiguous
        mask = np.zeros(volume.shape, dtype=bool, order="F" if fortran else "C")
        if codes is None:
            up = superior_of(affine) if affine is not None and slab else None
            self._predict_stored(volume, spacing, slope, inter, up, out=mask)
            return mask
        if affine is None:
            raise UsageError(
                f"model {self.model.name} segments arrays in {codes} orientation: "
                "predict() needs the scan's affine"
            )
        turn = Orientation.of(affine, codes)
        up = superior_of_codes(codes) if slab else None
        turned = turn.forward(mask)  # a view: the mask is written in the stored order
        self._predict_stored(
            turn.forward(volume), turn.spacing(spacing), slope, inter, up, out=turned
        )
        return mask

    def _predict_stored(
        self,
        volume: np.ndarray,
        spacing: tuple[float, float, float],
        slope: float,
        inter: float,
        up: Superior | None = None,
        *,
        out: np.ndarray,
    ) -> None:
        """The mask of ``volume`` fed to the network in its own array order (``up``: the
        patient's superior direction in it, for the head slab), written into ``out`` (all
        False, ``volume``'s shape)."""
        self._check_resampled_size(volume.shape, spacing)
        kji = np.asarray(volume).T  # nnU-Net's axis order (a view)
        kji_spacing = tuple(abs(float(s)) for s in spacing[::-1])
        with torch.inference_mode():
            self.strategy.segment(kji, kji_spacing, slope, inter, up=up, out=out.T)

    def _check_resampled_size(
        self, shape: tuple[int, ...], spacing: tuple[float, float, float]
    ) -> None:
        """Refuse a scan whose grid at the model's spacing would be absurdly large (e.g. a
        header with voxel sizes in microns read as mm) before nnU-Net allocates it."""
        target = list(self.strategy.spacing)[::-1]  # now (i, j, k), mm
        voxels = float(np.prod([n * s / t for n, s, t in zip(shape, spacing, target, strict=True)]))
        if voxels > MAX_RESAMPLED_VOXELS:
            extent = " x ".join(f"{n * s:.0f}" for n, s in zip(shape, spacing, strict=True))
            raise InputError(
                f"the image covers {extent} mm: {voxels:.2e} voxels at the model's spacing "
                f"(limit {MAX_RESAMPLED_VOXELS:.0e}); are the voxel sizes in the header right?"
            )

    def versions(self) -> dict[str, str]:
        """Provenance: the libraries this segmenter runs on."""
        return library_versions()

    def describe(self) -> ModelRecord:
        """Provenance: model, folder, configuration, folds, checkpoint sha256s, TTA, device,
        strategy."""
        model = self.model
        return ModelRecord(
            model=model.name,
            folder=str(model.folder),
            trainer=model.trainer,
            plans=model.plans_name,
            configuration=model.configuration,
            input_orientation=model.orientation or "stored array order",
            folds=tuple(model.folds),
            checkpoint_sha256=dict(model.checkpoint_sha256),
            licence=model.licence,
            tta=self.tta,
            device=str(self.device),
            tile_step_size=TILE_STEP_SIZE,
            inference=self.strategy.description,
            precision=self.precision,
        )
