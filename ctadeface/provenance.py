"""The provenance of one defaced scan: typed records, and their JSON form in the sidecar.

The participant level builds one :class:`Provenance` per scan from the records its stages return
(the segmenter's :class:`ModelRecord`, the :class:`~ctadeface.deface.fill.Fill`, the
:class:`~ctadeface.deface.postprocess.PostProcess`, the
:class:`~ctadeface.verify.verdict.Verification`); ``outputs`` writes it as the ``Defacing`` object
of the defaced image's sidecar (:func:`to_json`), and the skip logic and the group level read it
back through the same classes (:func:`from_json`). Keys are PascalCase, like BIDS: a field's
``snake_case`` name with each word capitalised and the words of :data:`ACRONYMS` spelled as
there (``input_sha256`` -> ``InputSHA256``, ``value_hu`` -> ``ValueHU``). Mappings keep their own
keys (package names, checkpoint paths).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ctadeface.deface.fill import Fill
from ctadeface.deface.postprocess import PostProcess
from ctadeface.deface.strict import StrictParams
from ctadeface.status import Status
from ctadeface.verify.verdict import Verification

T = TypeVar("T")

#: Words written in capitals (or their own casing) in JSON keys.
ACRONYMS: Mapping[str, str] = types.MappingProxyType(
    {"hu": "HU", "sha256": "SHA256", "tta": "TTA", "facenet": "FaceNet"}
)
#: Field metadata: the text written instead of a None value (e.g. "not run (--no-verify)").
ABSENT = "absent"


class ProvenanceError(ValueError):
    """A provenance object that does not have the shape of these records."""


@functools.cache
def json_key(name: str) -> str:
    """The JSON key of a field name: ``face_p_before`` -> ``FacePBefore``."""
    return "".join(ACRONYMS.get(word, word.capitalize()) for word in name.split("_"))


@dataclass(frozen=True)
class ModelRecord:
    """The model a scan was segmented with, and how (``FaceSegmenter.describe``).

    Attributes:
        model: the name given to ``--model`` (a registry name or a path).
        folder: the trained-model folder.
        trainer, plans, configuration: nnU-Net's names, from the folder name.
        input_orientation: axis codes the array is turned to, or "stored array order".
        folds: the folds used; checkpoint_sha256: checkpoint path (relative) -> sha256.
        licence: the model's licence as the registry or the user states it.
        tta: mirroring test-time augmentation; device: torch device; tile_step_size: the
            sliding window's step (fraction of the patch).
        inference: the strategy's description; precision: its network arithmetic.
    """

    model: str
    folder: str
    trainer: str
    plans: str
    configuration: str
    input_orientation: str
    folds: tuple[str, ...]
    checkpoint_sha256: Mapping[str, str]
    licence: str
    tta: bool
    device: str
    tile_step_size: float
    inference: str
    precision: str


@dataclass(frozen=True)
class Request:
    """What an up-to-date output must have been made from: a rerun with the same request and
    unchanged outputs skips the scan.

    Attributes:
        input_sha256: of the source image file.
        model_checkpoint_sha256: the model's checkpoint sha256s, sorted.
        fill: the fill policy; mask_mode: ``face`` or ``strict``; tta: test-time augmentation.
        inference: ``exact`` or ``fast, precision P`` (the strategy the model runs).
        post_process: whether the post-processing ran; verified: whether verification ran.
    """

    input_sha256: str
    model_checkpoint_sha256: tuple[str, ...]
    fill: str
    mask_mode: str
    tta: bool
    inference: str
    post_process: bool
    verified: bool


@dataclass(frozen=True)
class OutputHashes:
    """sha256 of the files written for a scan."""

    defaced: str
    mask: str


@dataclass(frozen=True)
class Provenance:
    """Everything recorded about one defaced scan.

    Attributes:
        software: package -> version (ctadeface, torch, nnunetv2, ...).
        model: the model and how it ran; fill: what replaced the masked voxels.
        post_processing: its parameters, None when it was off.
        strict: the strict cut's parameters, None in face mask mode.
        verification: the verdict, None with ``--no-verify``.
        start_time: ISO 8601, UTC; duration_seconds: the scan's wall time (model load apart).
        input_sha256: of the source; request: what the outputs were made from.
        output_sha256: of the defaced image and the mask.
        mask_voxels, mask_volume_ml: size of the mask (voxels, mL).
        status: the scan's status; removed_sidecar_fields: identifying sidecar keys dropped.
    """

    software: Mapping[str, str]
    model: ModelRecord
    fill: Fill
    post_processing: PostProcess | None = field(metadata={ABSENT: "none"})
    strict: StrictParams | None = field(metadata={ABSENT: "none"})
    verification: Verification | None = field(metadata={ABSENT: "not run (--no-verify)"})
    start_time: str
    duration_seconds: float
    input_sha256: str
    request: Request
    output_sha256: OutputHashes
    mask_voxels: int
    mask_volume_ml: float
    status: Status
    removed_sidecar_fields: tuple[str, ...] = ()


def to_json(value: Any) -> Any:
    """The JSON form of a record (dataclass), recursively: PascalCase keys, enums as their
    values, tuples as lists, a record's ``DERIVED`` properties after its fields."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            out[json_key(f.name)] = (
                f.metadata[ABSENT] if item is None and ABSENT in f.metadata else to_json(item)
            )
        for name in getattr(value, "DERIVED", ()):
            out[json_key(name)] = to_json(getattr(value, name))
        return out
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


def from_json(cls: type[T], data: Any) -> T:
    """The record ``cls`` from its JSON form (:func:`to_json`); keys it does not know (derived
    values) are ignored, missing ones take the field's default. Raises ProvenanceError."""
    try:
        return typing.cast(T, _decode(cls, data))
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise ProvenanceError(f"not a {cls.__name__} record: {err}") from err


@functools.cache
def _hints(kind: type) -> dict[str, Any]:
    """A record's field types, resolved once per class (resolving them dominates decoding)."""
    return typing.get_type_hints(kind)


def _decode(kind: Any, data: Any) -> Any:
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        if not isinstance(data, Mapping):
            raise ProvenanceError(f"{kind.__name__}: expected an object, got {data!r}")
        hints = _hints(kind)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(kind):
            key = json_key(f.name)
            if key not in data:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise ProvenanceError(f"{kind.__name__}: no {key}")
                continue
            item = data[key]
            if ABSENT in f.metadata and item == f.metadata[ABSENT]:
                values[f.name] = None
            else:
                values[f.name] = _decode(hints[f.name], item)
        return kind(**values)
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (types.UnionType, typing.Union):
        if data is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _decode(inner, data)
    if origin is tuple:
        if not isinstance(data, list | tuple):
            raise ProvenanceError(f"expected a list, got {data!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], v) for v in data)
        return tuple(_decode(a, v) for a, v in zip(args, data, strict=True))
    if origin in (Mapping, dict):
        if not isinstance(data, Mapping):
            raise ProvenanceError(f"expected an object, got {data!r}")
        return {str(k): _decode(args[1], v) for k, v in data.items()}
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return kind(data)
    if kind is float:
        return float("nan") if data is None else float(data)
    if kind in (int, str, bool) and not isinstance(data, kind):
        raise ProvenanceError(f"expected {kind.__name__}, got {data!r}")
    return data
