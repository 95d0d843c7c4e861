"""Segment: one loaded nnU-Net v2 face model turns a scan into its face mask.

``segmenter`` (:class:`FaceSegmenter`, the one object that owns the model, with a ``fast`` and
an ``exact`` strategy), ``network`` (the network and nnU-Net's sliding window, without
nnU-Net), ``resampling`` (nnU-Net's resampling on windows), ``orientation`` (a model's input
orientation), ``models`` (the registry and ``--model`` resolution; ``python -m
ctadeface.segment.models``), ``archive`` (model zips, build-time installs). Nothing else in the
app imports nnU-Net.

The names below are loaded on first use, so that importing a light module of this package
(``models``, to list or resolve models) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ctadeface.segment.segmenter import (
        FaceSegmenter,
        check_checkpoint_globals,
        choose_device,
        inference_request,
        torch_settings,
    )

__all__ = [
    "FaceSegmenter",
    "check_checkpoint_globals",
    "choose_device",
    "inference_request",
    "torch_settings",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from ctadeface.segment import segmenter

        return getattr(segmenter, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
