"""ctadeface.provenance: a scan's provenance records in their JSON form, read back the same."""

from __future__ import annotations

import json

import pytest

from ctadeface.provenance import ModelRecord, Provenance, Request
from ctadeface.records import RecordError, from_json, to_json
from ctadeface.status import Status
from tests import records


def _keys(obj: object) -> set[str]:
    """Every key of nested JSON objects, except inside mappings of names (Software, checkpoints)."""
    out: set[str] = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.add(k)
            if k not in ("Software", "CheckpointSHA256"):
                out |= _keys(v)
    elif isinstance(obj, list):
        for v in obj:
            out |= _keys(v)
    return out


def test_round_trip_through_json_text_gives_the_same_record() -> None:
    prov = records.provenance(Status.FACE_LIKE, 0.93, mask_mode="strict")
    text = json.dumps(to_json(prov))
    assert from_json(Provenance, json.loads(text)) == prov


def test_every_key_is_pascal_case_and_mappings_keep_theirs() -> None:
    written = to_json(records.provenance())
    assert all(k[0].isupper() and "_" not in k for k in _keys(written))
    assert written["Software"] == {"ctadeface": "0", "torch": "2"}
    assert written["Model"]["CheckpointSHA256"] == {"fold_all/checkpoint_final.pth": "ckpt"}
    assert written["Fill"]["NoiseStdHU"] == 0.0
    assert written["PostProcessing"]["Margin"]["MarginMm"] == 8.0
    assert written["PostProcessing"]["Skull"]["SoftHU"] == [-50.0, 150.0]
    assert written["OutputSHA256"] == {"Defaced": "d", "Mask": "m"}
    assert written["Verification"]["NRenders"] == 1  # derived values are written too
    assert written["Status"] == "defaced"


def test_absent_parts_are_written_as_text_and_read_back_as_none() -> None:
    prov = records.provenance(p_after=None, post_processing=None)
    written = to_json(prov)
    assert written["Verification"] == "not run (--no-verify)"
    assert written["PostProcessing"] == "none"
    back = from_json(Provenance, written)
    assert back.verification is None and back.post_processing is None and back == prov


def test_a_missing_default_is_filled_and_a_missing_required_key_refused() -> None:
    written = to_json(records.provenance())
    del written["RemovedSidecarFields"]
    assert from_json(Provenance, written).removed_sidecar_fields == ()
    del written["Request"]
    with pytest.raises(RecordError, match="no Request"):
        from_json(Provenance, written)


@pytest.mark.parametrize(
    "bad",
    [
        {"InputSHA256": 3},
        {"Verified": "yes"},
        {"ModelCheckpointSHA256": "not a list"},
    ],
)
def test_wrong_shapes_are_refused(bad: dict) -> None:
    written = {**to_json(records.request()), **bad}
    with pytest.raises(RecordError):
        from_json(Request, written)


def test_not_an_object_is_refused() -> None:
    with pytest.raises(RecordError, match="expected an object"):
        from_json(ModelRecord, ["a", "list"])
