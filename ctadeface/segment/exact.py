"""The exact strategy: nnU-Net's own predictor, as ``nnUNetv2_predict`` runs it.

``nnUNetPredictor.predict_single_npy_array`` over the whole field of view: nnU-Net's
preprocessing, sliding window and export, so the mask equals the one
``nnUNetv2_predict_from_modelfolder`` writes for the same NIfTI, model, folds and TTA. Arrays are
nnU-Net's: the stored NIfTI array transposed, (k, j, i), spacing in mm per axis. This is the only
module that imports nnU-Net at inference time (lazily, when the strategy is built).
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from ctadeface.errors import ModelError
from ctadeface.segment.localise import Superior
from ctadeface.segment.models import ModelSpec

log = logging.getLogger(__name__)

#: How the exact strategy describes itself in the provenance.
DESCRIPTION = "exact nnU-Net pipeline"


@contextlib.contextmanager
def quiet(what: str, logger: logging.Logger = log) -> Iterator[None]:
    """Capture what nnU-Net prints to stdout and pass it to ``logger`` (debug level)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield
    text = buffer.getvalue().strip()
    if text:
        logger.debug("nnU-Net (%s): %s", what, text)


def nnunet_predictor(
    model: ModelSpec, device: torch.device, *, tta: bool, tile_step_size: float
) -> Any:
    """nnU-Net's own predictor for ``model`` (imports nnU-Net). Raises ModelError."""
    with quiet("import"):
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    with quiet("load"):
        predictor = nnUNetPredictor(
            tile_step_size=tile_step_size,
            use_gaussian=True,
            use_mirroring=tta,
            perform_everything_on_device=device.type == "cuda",
            device=device,
            verbose=False,
            verbose_preprocessing=False,
            allow_tqdm=False,
        )
        try:
            predictor.initialize_from_trained_model_folder(
                str(model.folder), use_folds=tuple(model.folds), checkpoint_name=model.checkpoint
            )
        except (OSError, KeyError, RuntimeError, ValueError) as err:
            raise ModelError(f"model {model.folder} cannot be loaded: {err}") from err
    return predictor


class ExactStrategy:
    """Segments with an ``nnUNetPredictor`` loaded once."""

    description = DESCRIPTION
    precision = "as nnU-Net"

    def __init__(
        self, model: ModelSpec, device: torch.device, *, tta: bool, tile_step_size: float
    ) -> None:
        self._predictor = nnunet_predictor(model, device, tta=tta, tile_step_size=tile_step_size)

    @property
    def spacing(self) -> tuple[float, ...]:
        """The model grid, mm per axis (k, j, i)."""
        return tuple(float(s) for s in self._predictor.configuration_manager.spacing)

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
        """The bool mask of ``kji`` (stored units; HU = stored * slope + inter), spacing in mm
        per axis (k, j, i), over the whole field of view as nnU-Net does (``up`` is not used),
        written into ``out`` (``kji``'s shape)."""
        image = (np.asarray(kji, dtype=np.float32) * np.float32(slope) + np.float32(inter))[None]
        properties = {"spacing": list(spacing)}
        with quiet("predict"):
            labels = self._predictor.predict_single_npy_array(image, properties, None, None, False)
        np.not_equal(labels, 0, out=out)
