"""Typed records (frozen dataclasses) and their JSON form, read back the same.

Keys are PascalCase, like BIDS: a field's ``snake_case`` name with each word capitalised and the
words of :data:`ACRONYMS` spelled as there (``input_sha256`` -> ``InputSHA256``, ``value_hu`` ->
``ValueHU``). Mappings keep their own keys (package names, checkpoint paths). Enums are written
as their values, tuples as lists; a field whose metadata holds :data:`ABSENT` is written as that
text when it is None; a record's ``DERIVED`` properties (a class attribute naming them) are
written after its fields and ignored when read back.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")

#: Words written in capitals (or their own casing) in JSON keys.
ACRONYMS: Mapping[str, str] = types.MappingProxyType(
    {"hu": "HU", "sha256": "SHA256", "tta": "TTA", "facenet": "FaceNet"}
)
#: Field metadata: the text written instead of a None value (e.g. "not run (--no-verify)").
ABSENT = "absent"


class RecordError(ValueError):
    """JSON that does not have the shape of the record it is read as."""


@functools.cache
def json_key(name: str) -> str:
    """The JSON key of a field name: ``face_p_before`` -> ``FacePBefore``."""
    return "".join(ACRONYMS.get(word, word.capitalize()) for word in name.split("_"))


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
    values) are ignored, missing ones take the field's default. Raises RecordError."""
    try:
        return typing.cast(T, _decode(cls, data))
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise RecordError(f"not a {cls.__name__} record: {err}") from err


@functools.cache
def _hints(kind: type) -> dict[str, Any]:
    """A record's field types, resolved once per class (resolving them dominates decoding)."""
    return typing.get_type_hints(kind)


def _decode(kind: Any, data: Any) -> Any:
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        if not isinstance(data, Mapping):
            raise RecordError(f"{kind.__name__}: expected an object, got {data!r}")
        hints = _hints(kind)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(kind):
            key = json_key(f.name)
            if key not in data:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise RecordError(f"{kind.__name__}: no {key}")
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
            raise RecordError(f"expected a list, got {data!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], v) for v in data)
        return tuple(_decode(a, v) for a, v in zip(args, data, strict=True))
    if origin in (Mapping, dict):
        if not isinstance(data, Mapping):
            raise RecordError(f"expected an object, got {data!r}")
        return {str(k): _decode(args[1], v) for k, v in data.items()}
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return kind(data)
    if kind is float:
        return float("nan") if data is None else float(data)
    if kind in (int, str, bool) and not isinstance(data, kind):
        raise RecordError(f"expected {kind.__name__}, got {data!r}")
    return data
