"""The face segmenter: one object owns the loaded nnU-Net v2 model for the whole run.

Two ways to the same network, both fed the array the way nnU-Net's own NIfTI readers
(``SimpleITKIO``, ``NibabelIO``) do, i.e. the stored array transposed to (k, j, i) with the
spacing reversed:

- ``exact=True``: nnU-Net's own preprocessing, sliding window and export, so the mask equals the
  one ``nnUNetv2_predict_from_modelfolder`` writes for the same NIfTI, model, folds and TTA;
- ``exact=False`` (default, fast): nnU-Net's resampling (cubic B-spline for the image, linear for
  the logits, nearest along a strongly anisotropic axis, same grids, same clipping) done on torch
  as separable filters over a window only; nnU-Net's sliding-window tiles, Gaussian weights and
  fp16 sums, but only the tiles that reach the body's bounding box (HU > -500, plus a margin);
  the logits brought back to the source grid in blocks, never as a full-resolution float copy;
  the network in bf16 on CPUs that compute it natively (``precision``). Masks agree with the
  exact path to Dice >= 0.99 (measured by ``bench/benchmark.py``; tests/test_segment.py).

No subprocess, no temporary files; the network is loaded once.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import pickle
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ctadeface import grid
from ctadeface.errors import InputError, ModelError, UsageError
from ctadeface.models import ModelSpec
from ctadeface.network import (
    NUMPY_GLOBALS,
    ModelConfig,
    Network,
    UnsupportedModel,
    configuration,
    interpolation_orders,
    load_network,
    plan_tiles,
    read_config,
)
from ctadeface.orientation import Orientation

log = logging.getLogger(__name__)

#: The largest grid nnU-Net may resample a scan to (about 1.6 GB of float32 per channel).
MAX_RESAMPLED_VOXELS = 4.0e8

#: Fast path: voxels above this are body (HU); the box around them gets this margin (mm).
BODY_HU = -500.0
BOX_MARGIN_MM = 30.0

#: Normalisation schemes that act voxel by voxel, so the fast path may apply them to gathered
#: voxels before resampling (as nnU-Net normalises before it resamples).
POINTWISE_NORMALIZATIONS = frozenset({"CTNormalization", "NoNormalization"})

#: Torch dtypes that index_select handles on CPU and CUDA; other stored dtypes are cast first.
_TORCH_DTYPES = (np.int16, np.uint8, np.int8, np.int32, np.float32, np.float64)

#: nnU-Net image readers whose array is the stored NIfTI array transposed (2, 1, 0), spacing
#: reversed (no reorientation): the only ones whose input we can reproduce from (hu, spacing).
SUPPORTED_READERS = frozenset({"SimpleITKIO", "NibabelIO"})


@contextlib.contextmanager
def _quiet(what: str) -> Iterator[None]:
    """Capture what nnU-Net prints to stdout and pass it to the log (debug level)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield
    text = buffer.getvalue().strip()
    if text:
        log.debug("nnU-Net (%s): %s", what, text)


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


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); elsewhere bf16 is
    emulated and slower than float32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def choose_precision(precision: str, device: torch.device) -> str:
    """The fast path's network precision: ``auto`` is ``fp16`` autocast on CUDA (as nnU-Net
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


def check_checkpoint_globals(path: Path) -> None:
    """Refuse a checkpoint whose pickle references Python globals other than numpy scalars.

    Raises ModelError naming the file and the first offending globals.
    """
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except (OSError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        raise ModelError(f"checkpoint {path} is not a readable torch checkpoint ({err})") from err
    unsafe = sorted(
        g for g in found if g not in NUMPY_GLOBALS and not g.startswith("numpy.dtypes.")
    )
    if unsafe:
        raise ModelError(
            f"refusing checkpoint {path}: it holds Python objects ({', '.join(unsafe[:3])}) "
            "that could run code when loaded; use a model from a source you trust and check it"
        )


#: nnU-Net resampling functions the fast path reproduces (with their order/order_z/separate-z
#: keyword arguments).
SUPPORTED_RESAMPLING = frozenset({"resample_data_or_seg_to_shape"})


def _fast_path_unsupported(config: ModelConfig) -> str:
    """Why the fast path cannot reproduce this model's preprocessing ('' if it can)."""
    if config.normalization[0] not in POINTWISE_NORMALIZATIONS:
        return f"its intensity normalisation {config.normalization[0]} is not voxel-wise"
    for key, (name, kwargs) in (
        ("resampling_fn_data", config.resampling_data),
        ("resampling_fn_probabilities", config.resampling_probabilities),
    ):
        if name not in SUPPORTED_RESAMPLING:
            return f"its {key} is {name}"
        for order_key in ("order", "order_z"):
            if int(kwargs.get(order_key, 0)) not in grid.ORDERS:
                return f"its {key} {order_key} {kwargs.get(order_key)} is not 0, 1 or 3"
    return ""


def _clip_to_source_range(
    low: torch.Tensor,
    source: torch.Tensor,
    transform: Callable[[torch.Tensor], torch.Tensor],
    axis: int | None,
    maps: Sequence[grid.AxisMap],
) -> None:
    """Clip resampled values in place to the range of the normalised source, over the whole
    image, or per slice along a separately resampled ``axis`` (as nnU-Net's 2D resizes)."""
    if axis is None:
        bounds = transform(torch.stack([source.min(), source.max()]))
        low.clamp_(float(bounds[0]), float(bounds[1]))
        return
    others = tuple(a for a in range(3) if a != axis)
    lows = transform(source.amin(dim=others))[maps[axis].index[:, 0]]
    highs = transform(source.amax(dim=others))[maps[axis].index[:, 0]]
    shape = [1, 1, 1]
    shape[axis] = -1
    torch.maximum(low, lows.view(shape), out=low)
    torch.minimum(low, highs.view(shape), out=low)


_FAST_DESCRIPTION = (
    "nnU-Net's resampling, tiles and weights, only the tiles reaching the body box "
    f"(HU > {BODY_HU:.0f}, margin {BOX_MARGIN_MM:.0f} mm)"
)


#: A logit that no interpolation with real logits (|x| < 100) can overturn, and finite, so that
#: the zero weights of the resampling filters keep it out of voxels it does not reach.
_FAR = 1.0e4


def _crop_or_pad(
    logits: torch.Tensor, window: Sequence[tuple[int, int]], needed: Sequence[tuple[int, int]]
) -> torch.Tensor:
    """The ``needed`` block (start, stop per axis) of ``logits`` (C, ...) that cover
    ``window``, float32, zeros where the window does not reach."""
    shape = [b - a for a, b in needed]
    if all(w[0] <= a and b <= w[1] for (a, b), w in zip(needed, window, strict=True)):
        inner = tuple(slice(a - w[0], b - w[0]) for (a, b), w in zip(needed, window, strict=True))
        return logits[(slice(None), *inner)].float()
    out = torch.zeros((logits.shape[0], *shape), dtype=torch.float32, device=logits.device)
    lo = [max(a, w[0]) for (a, _), w in zip(needed, window, strict=True)]
    hi = [min(b, w[1]) for (_, b), w in zip(needed, window, strict=True)]
    if all(h > lw for lw, h in zip(lo, hi, strict=True)):
        dst = tuple(slice(lw - a, h - a) for lw, h, (a, _) in zip(lo, hi, needed, strict=True))
        src = tuple(slice(lw - w[0], h - w[0]) for lw, h, w in zip(lo, hi, window, strict=True))
        out[(slice(None), *dst)] = logits[(slice(None), *src)].float()
    return out


def _positive(block: torch.Tensor) -> torch.Tensor:
    return block[0] > 0


def _not_background(block: torch.Tensor) -> torch.Tensor:
    return block.argmax(0) != 0


def _any_region(block: torch.Tensor) -> torch.Tensor:
    return (block > 0).any(0)


def _config_of(predictor: Any, configuration_name: str) -> ModelConfig:
    """The inference settings of a model nnU-Net loaded itself (``nnUNetPredictor`` keeps the
    plans but not the name of the configuration it loaded)."""
    return read_config(
        predictor.plans_manager.plans,
        predictor.dataset_json,
        configuration_name,
        predictor.allowed_mirroring_axes or (),
    )


def _versions() -> dict[str, str]:
    out = {"torch": torch.__version__}
    for dist in ("nnunetv2", "dynamic_network_architectures"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:  # pragma: no cover - installed with the app
            out[dist] = "unknown"
    return out


class FaceSegmenter:
    """Owns one loaded model; segments scans one after another.

    The fast path runs the network built by :mod:`ctadeface.network` (weights loaded with
    ``weights_only=True``; nnU-Net itself builds it only for plans that module cannot read);
    the exact path (``exact=True``, or a model whose preprocessing the fast path cannot
    reproduce) runs an ``nnUNetPredictor``.

    ``device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``. ``tta``: mirroring test-time
    augmentation (``nnUNetv2_predict`` default on, CTA-DEFACE later ran with it off).
    ``nprocs``: torch CPU threads (``torch.set_num_threads``), None leaves torch's default.
    ``exact``: nnU-Net's own pipeline over the whole field of view instead of the fast path
    (see the module docstring). ``precision``: the fast path's network arithmetic (see
    :func:`choose_precision`; the exact path always does what nnU-Net does). Checkpoints not
    verified by a pinned sha256 are checked to hold no Python objects beyond numpy scalars
    before anything unpickles them.
    """

    def __init__(
        self,
        model: ModelSpec,
        *,
        device: str = "auto",
        tta: bool = False,
        nprocs: int | None = None,
        exact: bool = False,
        precision: str = "auto",
    ) -> None:
        t0 = time.perf_counter()
        self.model = model
        self.tta = tta
        self.exact = exact
        self.tile_step_size = 0.5
        self.device = choose_device(device)
        self.precision = choose_precision(precision, self.device)
        if self.device.type == "cuda":  # as nnUNetPredictor: tiles have one shape, tune once
            torch.backends.cudnn.benchmark = True
        if nprocs is not None:
            if nprocs < 1:
                raise UsageError(f"--nprocs {nprocs}: must be at least 1")
            torch.set_num_threads(nprocs)
        if not model.pinned:  # pinned checkpoints were verified by sha256 in resolve_model
            for relpath in model.checkpoint_sha256:
                check_checkpoint_globals(model.folder / relpath)
        self._check_supported()
        self._predictor: Any = None
        self._network: Network | None = None
        if not exact:
            self._network = self._load_network()
            why = _fast_path_unsupported(self._network.config)
            if why:
                log.info("model %s: %s; using nnU-Net's exact pipeline", model.name, why)
                self.exact = True
        if self.exact:
            self._predictor = self._nnunet_predictor()
        else:
            assert self._network is not None
            self._warm_up()
        self.load_seconds = time.perf_counter() - t0
        log.info(
            "loaded model %s (%s, folds %s) on %s, tta %s, %s, in %.2f s",
            model.name,
            model.folder,
            ",".join(model.folds),
            self.device,
            "on" if tta else "off",
            "exact nnU-Net pipeline" if self.exact else f"fast path, {self.precision}",
            self.load_seconds,
        )

    def _warm_up(self) -> None:
        """Segment a small synthetic head once, so that one-off costs (kernel set-up, lazy
        imports, first allocations) count as model load, not as the first scan's time."""
        assert self._network is not None
        target = self._network.config.spacing
        shape = [max(int(p), 8) for p in self._network.config.patch_size]
        idx = np.indices(shape, dtype=np.float32)
        radius = sum(((idx[a] - n / 2) / (0.35 * n)) ** 2 for a, n in enumerate(shape))
        head = np.where(radius < 1.0, 40, -1000).astype(np.int16)
        with torch.inference_mode():
            self._predict_fast(head, tuple(0.8 * float(t) for t in target), 1.0, 0.0)

    def _load_network(self) -> Network:
        model = self.model
        try:
            try:
                config, module, weights = load_network(
                    model.folder, model.configuration, model.folds, model.checkpoint, model.trainer
                )
            except UnsupportedModel as why:
                log.info("model %s: %s; nnU-Net builds its network", model.name, why)
                predictor = self._nnunet_predictor()
                config = _config_of(predictor, model.configuration)
                module, weights = predictor.network, list(predictor.list_of_parameters)
        except (OSError, KeyError, RuntimeError, ValueError, TypeError) as e:
            raise ModelError(f"model {model.folder} cannot be loaded: {e}") from e
        except pickle.UnpicklingError as e:
            raise ModelError(f"model {model.folder}: refusing its checkpoint ({e})") from e
        return Network(module, weights, config, self.device, tta=self.tta, precision=self.precision)

    def _nnunet_predictor(self) -> Any:
        """nnU-Net's own predictor for this model (imports nnU-Net)."""
        model = self.model
        with _quiet("import"):
            from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
        with _quiet("load"):
            predictor = nnUNetPredictor(
                tile_step_size=self.tile_step_size,
                use_gaussian=True,
                use_mirroring=self.tta,
                perform_everything_on_device=self.device.type == "cuda",
                device=self.device,
                verbose=False,
                verbose_preprocessing=False,
                allow_tqdm=False,
            )
            try:
                predictor.initialize_from_trained_model_folder(
                    str(model.folder),
                    use_folds=tuple(model.folds),
                    checkpoint_name=model.checkpoint,
                )
            except (OSError, KeyError, RuntimeError, ValueError) as err:
                raise ModelError(f"model {model.folder} cannot be loaded: {err}") from err
        return predictor

    def _check_supported(self) -> None:
        folder = self.model.folder
        try:
            plans = json.loads((folder / "plans.json").read_text(encoding="utf-8"))
            dataset = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
            config = configuration(plans, self.model.configuration)
        except (OSError, ValueError, KeyError) as err:
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

    def predict(
        self,
        volume: np.ndarray,
        spacing: tuple[float, float, float],
        *,
        slope: float = 1.0,
        inter: float = 0.0,
        affine: np.ndarray | None = None,
    ) -> np.ndarray:
        """The face mask of one scan.

        ``volume``: 3D, array order as stored on disk (i, j, k), in stored units (HU = stored *
        ``slope`` + ``inter``; pass HU with the defaults). ``spacing``: mm per array axis (i, j,
        k). ``affine``: voxel -> world RAS+ mm; required by a model that declares an input
        orientation (``ModelSpec.orientation``): the array is turned to it (axis permutation and
        flips, a copy), segmented, and the mask turned back. Returns a bool array of the same
        shape, True = face (any non-background label); it has the memory order of ``volume``
        (Fortran for a NIfTI loaded by nibabel).
        """
        if volume.ndim != 3:
            raise ValueError(f"expected a 3D image, got shape {volume.shape}")
        if len(spacing) != 3 or min(spacing) <= 0:
            raise ValueError(f"expected three positive spacings (mm), got {spacing}")
        codes = self.model.orientation
        if codes is None:
            return self._predict_stored(volume, spacing, slope, inter)
        if affine is None:
            raise UsageError(
                f"model {self.model.name} segments arrays in {codes} orientation: "
                "predict() needs the scan's affine"
            )
        turn = Orientation.of(affine, codes)
        mask = self._predict_stored(turn.forward(volume), turn.spacing(spacing), slope, inter)
        return turn.backward(mask, volume)

    def _predict_stored(
        self, volume: np.ndarray, spacing: tuple[float, float, float], slope: float, inter: float
    ) -> np.ndarray:
        """The mask of ``volume`` fed to the network in its own array order."""
        self._check_resampled_size(volume.shape, spacing)
        kji = np.asarray(volume).T  # nnU-Net's axis order; C-ordered for a nibabel array
        kji_spacing = tuple(abs(float(s)) for s in spacing[::-1])
        with torch.inference_mode(), _quiet("predict"):
            if self.exact:
                mask_kji = self._predict_exact(kji, kji_spacing, slope, inter)
            else:
                mask_kji = self._predict_fast(kji, kji_spacing, slope, inter)
        return mask_kji.T

    def _predict_exact(
        self, kji: np.ndarray, spacing: tuple[float, ...], slope: float, inter: float
    ) -> np.ndarray:
        image = (np.asarray(kji, dtype=np.float32) * np.float32(slope) + np.float32(inter))[None]
        properties = {"spacing": list(spacing)}
        labels = self._predictor.predict_single_npy_array(image, properties, None, None, False)
        return np.asarray(labels) != 0

    def _predict_fast(
        self, kji: np.ndarray, spacing: tuple[float, ...], slope: float, inter: float
    ) -> np.ndarray:
        """nnU-Net's sliding window restricted to the tiles that reach the body.

        The model grid, the tile positions, the Gaussian weighting and its half-precision
        accumulation are nnU-Net's for the whole field of view. Only tiles holding body (grown
        by ``BOX_MARGIN_MM``) run; every tile covering such a voxel does, so there the logits are
        those of the whole-image run (given the same resampled input). Elsewhere the mask is
        background.
        """
        assert self._network is not None
        config = self._network.config
        patch = [int(p) for p in config.patch_size]
        full = grid.target_shape(kji.shape, spacing, [float(t) for t in config.spacing])
        threshold = (BODY_HU - inter) / slope if slope > 0 else -np.inf
        mask = np.zeros(kji.shape, dtype=bool)
        cells = grid.body_cells(kji, spacing, threshold)
        if cells is None:
            return mask
        box = grid.body_box(kji, spacing, threshold, margin_mm=BOX_MARGIN_MM, cells=cells)
        assert box is not None
        target = [float(t) for t in config.spacing]
        region = grid.body_on_grid(cells, kji.shape, full, target, BOX_MARGIN_MM)
        data_orders, data_axis = interpolation_orders(config.resampling_data[1], spacing, target)
        prob_orders, _ = interpolation_orders(config.resampling_probabilities[1], target, spacing)
        needed = [
            grid.source_window(n_low, n, (b.start, b.stop), order=order)
            for n_low, n, b, order in zip(full, kji.shape, box, prob_orders, strict=True)
        ]
        plan = plan_tiles(full, patch, needed, self.tile_step_size, region)
        volume = kji if kji.dtype.type in _TORCH_DTYPES and kji.dtype.isnative else None
        if volume is None:  # torch cannot index this dtype: a float32 copy
            volume = kji.astype(np.float32)
        source = torch.from_numpy(volume).to(self.device)
        maps = [
            grid.axis_map(n, n_low, (w0, w1), order=order, device=self.device)
            for n, n_low, (w0, w1), order in zip(
                kji.shape, full, plan.real, data_orders, strict=True
            )
        ]
        transform = self._transform(slope, inter)
        low = grid.resample(source, maps, transform)
        if full != kji.shape:  # skimage's resize clips to the range of what it resized
            _clip_to_source_range(low, source, transform, data_axis, maps)
        del source
        low = torch.nn.functional.pad(low, plan.padding)[None, None]
        window_logits = self._network.logits(low, plan.tiles)
        del low
        logits = _crop_or_pad(window_logits, plan.window, needed)
        del window_logits
        outside = torch.from_numpy(~region[tuple(slice(a, b) for a, b in needed)])
        outside = outside.to(self.device)
        if config.has_regions:
            decide = _any_region
            logits[:, outside] = -_FAR
        elif logits.shape[0] == 2:  # linear interpolation commutes with the difference
            logits, decide = (logits[1] - logits[0])[None], _positive
            logits[:, outside] = -_FAR
        else:
            decide = _not_background
            logits[0, outside] = _FAR
        up = [
            grid.axis_map(n_low, n, (b.start, b.stop), order=order, offset=a, device=self.device)
            for n_low, n, b, (a, _), order in zip(
                full, kji.shape, box, needed, prob_orders, strict=True
            )
        ]
        grid.resample_decide(logits, up, decide, out=mask[box])
        return mask

    def _transform(self, slope: float, inter: float) -> Any:
        """Stored values -> float32 HU -> the model's normalisation (elementwise)."""
        assert self._network is not None
        scheme, props = self._network.config.normalization

        def to_input(t: torch.Tensor) -> torch.Tensor:
            hu = t.float()
            if slope != 1.0 or inter != 0.0:
                hu = hu * slope + inter
            if scheme == "CTNormalization":
                hu = hu.clamp(props["percentile_00_5"], props["percentile_99_5"])  # a new tensor
                hu = (hu - props["mean"]) / max(props["std"], 1e-8)
            return hu

        return to_input

    def _check_resampled_size(
        self, shape: tuple[int, ...], spacing: tuple[float, float, float]
    ) -> None:
        """Refuse a scan whose grid at the model's spacing would be absurdly large (e.g. a
        header with voxel sizes in microns read as mm) before nnU-Net allocates it."""
        if self._network is not None:
            spacing_kji = list(self._network.config.spacing)
        else:
            spacing_kji = list(self._predictor.configuration_manager.spacing)
        target = spacing_kji[::-1]  # now (i, j, k), mm
        voxels = float(np.prod([n * s / t for n, s, t in zip(shape, spacing, target, strict=True)]))
        if voxels > MAX_RESAMPLED_VOXELS:
            extent = " x ".join(f"{n * s:.0f}" for n, s in zip(shape, spacing, strict=True))
            raise InputError(
                f"the image covers {extent} mm: {voxels:.2e} voxels at the model's spacing "
                f"(limit {MAX_RESAMPLED_VOXELS:.0e}); are the voxel sizes in the header right?"
            )

    def describe(self) -> dict[str, Any]:
        """Provenance: model, folder, configuration, folds, checkpoint sha256s, TTA, device,
        library versions."""
        return {
            "model": self.model.name,
            "folder": str(self.model.folder),
            "trainer": self.model.trainer,
            "plans": self.model.plans_name,
            "configuration": self.model.configuration,
            "input_orientation": self.model.orientation or "stored array order",
            "folds": list(self.model.folds),
            "checkpoint_sha256": dict(self.model.checkpoint_sha256),
            "licence": self.model.licence,
            "tta": self.tta,
            "device": str(self.device),
            "tile_step_size": self.tile_step_size,
            "inference": "exact nnU-Net pipeline" if self.exact else _FAST_DESCRIPTION,
            "precision": "as nnU-Net" if self.exact else self.precision,
            "versions": _versions(),
        }
