"""ctadeface.records: typed records in their PascalCase JSON form, read back the same."""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import pytest

from ctadeface.records import ABSENT, RecordError, from_json, json_key, to_json


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True)
class Inner:
    value_hu: float
    colour: Colour


@dataclass(frozen=True)
class Outer:
    DERIVED: ClassVar[tuple[str, ...]] = ("n_items",)

    input_sha256: str
    items: tuple[Inner, ...]
    pair: tuple[int, str]
    by_name: Mapping[str, int]
    inner: Inner | None = field(default=None, metadata={ABSENT: "not run"})
    count: int = 0

    @property
    def n_items(self) -> int:
        return len(self.items)


def _outer() -> Outer:
    return Outer(
        input_sha256="abc",
        items=(Inner(-1000.0, Colour.RED), Inner(40.5, Colour.BLUE)),
        pair=(3, "x"),
        by_name={"snake_case_key": 1, "torch": 2},
        inner=Inner(0.0, Colour.BLUE),
        count=7,
    )


def test_json_keys_are_pascal_case_with_acronyms() -> None:
    assert json_key("input_sha256") == "InputSHA256"
    assert json_key("value_hu") == "ValueHU"
    assert json_key("facenet_similarity") == "FaceNetSimilarity"
    assert json_key("tta") == "TTA"
    assert json_key("mask_volume_ml") == "MaskVolumeMl"


def test_the_json_form_of_a_record() -> None:
    written = to_json(_outer())
    assert written == {
        "InputSHA256": "abc",
        "Items": [{"ValueHU": -1000.0, "Colour": "red"}, {"ValueHU": 40.5, "Colour": "blue"}],
        "Pair": [3, "x"],
        "ByName": {"snake_case_key": 1, "torch": 2},  # a mapping keeps its own keys
        "Inner": {"ValueHU": 0.0, "Colour": "blue"},
        "Count": 7,
        "NItems": 2,  # derived, after the fields
    }
    assert list(written)[-1] == "NItems"


def test_a_record_read_back_from_json_text_is_the_same_record() -> None:
    record = _outer()
    assert from_json(Outer, json.loads(json.dumps(to_json(record)))) == record


def test_an_absent_field_is_written_as_its_text_and_read_back_as_none() -> None:
    record = Outer("abc", (), (1, "y"), {})
    written = to_json(record)
    assert written["Inner"] == "not run"
    assert from_json(Outer, written) == record


def test_missing_defaults_are_filled_and_a_missing_required_key_refused() -> None:
    written = to_json(_outer())
    del written["Count"], written["NItems"]
    assert from_json(Outer, written).count == 0
    del written["Pair"]
    with pytest.raises(RecordError, match="Outer: no Pair"):
        from_json(Outer, written)


def test_a_null_float_reads_as_nan() -> None:
    assert math.isnan(from_json(Inner, {"ValueHU": None, "Colour": "red"}).value_hu)


@pytest.mark.parametrize(
    "bad",
    [
        {"InputSHA256": 3},
        {"Count": "7"},
        {"Pair": "not a list"},
        {"Pair": [1]},
        {"ByName": ["a"]},
        {"Items": [{"ValueHU": 1.0, "Colour": "green"}]},
    ],
)
def test_wrong_shapes_are_refused(bad: dict) -> None:
    with pytest.raises(RecordError, match="not a Outer record"):
        from_json(Outer, {**to_json(_outer()), **bad})


def test_not_an_object_is_refused() -> None:
    with pytest.raises(RecordError, match="expected an object"):
        from_json(Inner, ["a", "list"])
