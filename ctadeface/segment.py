"""The face segmenter: one object owns the loaded nnU-Net v2 model for the whole run.

``FaceSegmenter(model).predict(hu, spacing)`` gives exactly the mask that
``nnUNetv2_predict_from_modelfolder`` writes for the same NIfTI, model folder, folds and TTA
setting: it feeds nnU-Net the array the way nnU-Net's own NIfTI readers (``SimpleITKIO``,
``NibabelIO``) do, i.e. the stored array transposed to (k, j, i) with the spacing reversed, and
transposes the result back. No subprocess, no temporary files; the network is loaded once.
"""

from __future__ import annotations

import contextlib
import io
import logging
import pickle
import time
import zipfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ctadeface.errors import InputError, ModelError, UsageError
from ctadeface.models import ModelSpec

log = logging.getLogger(__name__)

#: The largest grid nnU-Net may resample a scan to (about 1.6 GB of float32 per channel).
MAX_RESAMPLED_VOXELS = 4.0e8

#: nnU-Net image readers whose array is the stored NIfTI array transposed (2, 1, 0), spacing
#: reversed (no reorientation): the only ones whose input we can reproduce from (hu, spacing).
SUPPORTED_READERS = frozenset({"SimpleITKIO", "NibabelIO"})

#: Globals a checkpoint written by nnU-Net training may hold besides tensors (numpy scalars in
#: its training log). Anything else in a checkpoint that was not verified by its pinned sha256
#: is refused: ``torch.load(weights_only=False)``, which nnU-Net uses, could run it as code.
_ALLOWED_CHECKPOINT_GLOBALS = frozenset(
    {
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "numpy.dtype",
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
        "numpy.ndarray",
    }
)


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


def check_checkpoint_globals(path: Path) -> None:
    """Refuse a checkpoint whose pickle references Python globals other than numpy scalars.

    Raises ModelError naming the file and the first offending globals.
    """
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except (OSError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        raise ModelError(f"checkpoint {path} is not a readable torch checkpoint ({err})") from err
    unsafe = sorted(
        g
        for g in found
        if g not in _ALLOWED_CHECKPOINT_GLOBALS and not g.startswith("numpy.dtypes.")
    )
    if unsafe:
        raise ModelError(
            f"refusing checkpoint {path}: it holds Python objects ({', '.join(unsafe[:3])}) "
            "that could run code when loaded; use a model from a source you trust and check it"
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
    """Owns one ``nnUNetPredictor`` loaded from ``model``; segments scans one after another.

    ``device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``. ``tta``: mirroring test-time
    augmentation (``nnUNetv2_predict`` default on, CTA-DEFACE later ran with it off).
    ``nprocs``: torch CPU threads (``torch.set_num_threads``), None leaves torch's default.
    Checkpoints not verified by a pinned sha256 are checked to hold no Python objects beyond
    numpy scalars before nnU-Net unpickles them.
    """

    def __init__(
        self,
        model: ModelSpec,
        *,
        device: str = "auto",
        tta: bool = False,
        nprocs: int | None = None,
    ) -> None:
        t0 = time.perf_counter()
        self.model = model
        self.tta = tta
        self.device = choose_device(device)
        if nprocs is not None:
            if nprocs < 1:
                raise UsageError(f"--nprocs {nprocs}: must be at least 1")
            torch.set_num_threads(nprocs)
        if not model.pinned:  # pinned checkpoints were verified by sha256 in resolve_model
            for relpath in model.checkpoint_sha256:
                check_checkpoint_globals(model.folder / relpath)
        with _quiet("import"):
            from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
        on_cuda = self.device.type == "cuda"
        with _quiet("load"):
            predictor = nnUNetPredictor(
                tile_step_size=0.5,
                use_gaussian=True,
                use_mirroring=tta,
                perform_everything_on_device=on_cuda,
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
        self._check_supported(predictor)
        self._predictor = predictor
        self.load_seconds = time.perf_counter() - t0
        log.info(
            "loaded model %s (%s, folds %s) on %s, tta %s, in %.2f s",
            model.name,
            model.folder,
            ",".join(model.folds),
            self.device,
            "on" if tta else "off",
            self.load_seconds,
        )

    def _check_supported(self, predictor: Any) -> None:
        plans = predictor.plans_manager.plans
        reader = plans.get("image_reader_writer", "SimpleITKIO")
        if reader not in SUPPORTED_READERS:
            raise ModelError(
                f"model {self.model.folder} reads images with {reader}; only models using "
                f"{' or '.join(sorted(SUPPORTED_READERS))} are supported"
            )
        if predictor.configuration_manager.previous_stage_name is not None:
            raise ModelError(f"model {self.model.folder} is a cascade stage; not supported")
        dataset = predictor.dataset_json
        channels = dataset.get("channel_names", dataset.get("modality"))
        if channels is not None and len(channels) != 1:
            raise ModelError(
                f"model {self.model.folder} takes {len(channels)} input channels; a face model "
                "takes one (CT)"
            )

    def predict(self, hu: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
        """The face mask of one scan.

        ``hu``: 3D float32 HU, array order as stored on disk (i, j, k). ``spacing``: mm per array
        axis (i, j, k). Returns a bool array of the same shape, True = face (any non-background
        label).
        """
        if hu.ndim != 3:
            raise ValueError(f"expected a 3D image, got shape {hu.shape}")
        if len(spacing) != 3 or min(spacing) <= 0:
            raise ValueError(f"expected three positive spacings (mm), got {spacing}")
        self._check_resampled_size(hu.shape, spacing)
        image = np.asarray(hu, dtype=np.float32).transpose(2, 1, 0)[None]
        properties = {"spacing": [abs(float(s)) for s in spacing[::-1]]}
        with torch.inference_mode(), _quiet("predict"):
            labels = self._predictor.predict_single_npy_array(image, properties, None, None, False)
        return np.ascontiguousarray(np.asarray(labels).transpose(2, 1, 0) != 0)

    def _check_resampled_size(
        self, shape: tuple[int, ...], spacing: tuple[float, float, float]
    ) -> None:
        """Refuse a scan whose grid at the model's spacing would be absurdly large (e.g. a
        header with voxel sizes in microns read as mm) before nnU-Net allocates it."""
        target = self._predictor.configuration_manager.spacing[::-1]  # now (i, j, k), mm
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
            "folds": list(self.model.folds),
            "checkpoint_sha256": dict(self.model.checkpoint_sha256),
            "licence": self.model.licence,
            "tta": self.tta,
            "device": str(self.device),
            "tile_step_size": 0.5,
            "versions": _versions(),
        }
