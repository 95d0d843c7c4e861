"""ctadeface.report.table: the group rows, their order, what needs a look, the TSV."""

from __future__ import annotations

from ctadeface.report.table import (
    COLUMNS,
    PLAUSIBLE_MASK_ML,
    group_table,
    needs_a_look,
    reason,
    to_tsv,
)
from ctadeface.status import Status
from tests import records


def rows():
    pairs = [
        (records.scan("01"), records.provenance(Status.DEFACED, 0.1)),
        (records.scan("02", "a"), None),
        (records.scan("03"), records.provenance(Status.IDENTIFIABLE, 0.93)),
        (records.scan("04"), records.provenance(Status.FACE_LIKE, 0.6)),
        (records.scan("05"), records.provenance(Status.FACE_LIKE, 0.6, mask_mode="strict")),
    ]
    return group_table(pairs)


def test_rows_flag_problems_first_and_fill_na():
    table = rows()
    statuses = [(r["participant_id"], r["status"], r["mask_mode"]) for r in table]
    assert statuses == [
        ("sub-03", "identifiable", "face"),
        ("sub-05", "face-like", "strict"),  # a failure of strict mode
        ("sub-02", "missing", "n/a"),
        ("sub-04", "face-like", "face"),  # the kept facial skeleton: shown, not urgent
        ("sub-01", "defaced", "face"),
    ]
    assert table[0]["identity_rank1_views"] == "1/4" and table[0]["identity_p"] == "0.001"
    missing = table[2]
    assert missing["session_id"] == "ses-a" and missing["mask_volume_ml"] == "n/a"
    done = table[4]
    assert done["face_p_after"] == "0.100" and done["facenet_similarity"] == "n/a"
    assert done["model"] == "open" and done["device"] == "cpu" and done["fill_value"] == "-1000.0"
    assert done["dlib_faces_after"] == "0" and done["identity_chance"] == "0.0067"


def test_tsv_has_the_documented_columns_one_row_per_scan():
    text = to_tsv(rows())
    lines = text.splitlines()
    assert lines[0].split("\t") == list(COLUMNS)
    assert len(lines) == 6 and all(len(line.split("\t")) == len(COLUMNS) for line in lines)
    for column in (
        "participant_id",
        "status",
        "mask_mode",
        "identity_rank1_views",
        "identity_chance",
        "identity_p",
        "face_p_before",
        "face_p_after",
        "dlib_faces_after",
        "seconds",
    ):
        assert column in COLUMNS


def test_an_implausible_mask_volume_needs_a_look_and_says_why():
    low, high = PLAUSIBLE_MASK_ML
    pairs = [
        (records.scan(f"{i:02d}"), records.provenance(Status.FACE_LIKE, 0.9, mask_volume_ml=ml))
        for i, ml in enumerate((high + 1, low - 1, (low + high) / 2))
    ]
    table = group_table(pairs)
    assert [needs_a_look(r) for r in table] == [True, True, False]
    assert reason(table[0]).startswith(f"mask {high + 1:.3f} mL, outside")
    assert reason(table[2]) == ""  # the kept facial skeleton, shown but not urgent


def test_every_row_that_needs_a_look_says_why():
    for row in rows():
        assert bool(reason(row)) == needs_a_look(row)
    assert "rank 1 on 1/4 yaws" in reason(rows()[0])
