"""Tests for ctadeface.discover: which files are CT inputs, filters, labels, sidecar inheritance."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctadeface import discover
from ctadeface.discover import Scan, find_scans, load_filter_file, normalize_label
from ctadeface.errors import EXIT_NOINPUT, InputError, NoInputError, UsageError
from tests.bidsfixture import (
    CT_RELPATHS,
    DECOY_RELPATHS,
    FILE_SIDECARS,
    ROOT_SIDECAR,
    T1W_RELPATH,
    make_bids_dataset,
    tiny_image,
)

SUB01, SUB02_SES1, SUB02_SES2 = CT_RELPATHS


@pytest.fixture
def bids(tmp_path: Path) -> Path:
    return make_bids_dataset(tmp_path / "bids")


def relpaths(scans: list[Scan]) -> list[str]:
    return [scan.relpath for scan in scans]


def by_relpath(scans: list[Scan]) -> dict[str, Scan]:
    return {scan.relpath: scan for scan in scans}


def sidecar_of(bids: Path, relpath: str) -> Path:
    return bids / relpath.replace(".nii.gz", ".json")


# --- what is a CT input ---------------------------------------------------------------------


def test_finds_exactly_the_ct_images(bids: Path) -> None:
    scans = find_scans(bids)
    assert relpaths(scans) == sorted(CT_RELPATHS)
    found = set(relpaths(scans))
    assert T1W_RELPATH not in found
    assert not found & set(DECOY_RELPATHS)
    for scan in scans:
        assert scan.path == bids / scan.relpath
        assert scan.path.is_absolute() and scan.path.is_file()


def test_scan_fields_for_session_ct_folder_and_upper_case_suffix(bids: Path) -> None:
    scans = by_relpath(find_scans(bids))
    upper = scans[SUB02_SES1]
    assert (upper.subject, upper.session, upper.datatype, upper.suffix) == ("02", "1", "ct", "CT")
    assert upper.entities == (("sub", "02"), ("ses", "1"), ("ce", "iodine"))
    assert upper.stem_entities == "sub-02_ses-1_ce-iodine"
    assert upper.extension == ".nii.gz"
    plain = scans[SUB01]
    assert (plain.subject, plain.session, plain.datatype) == ("01", None, "anat")
    assert plain.suffix == "ct"
    assert plain.stem_entities == "sub-01_acq-cta_ce-iodine"
    run = scans[SUB02_SES2]
    assert run.entities[-1] == ("run", "1")
    assert Path(run.relpath).name == f"{run.stem_entities}_{run.suffix}{run.extension}"
    assert all(scan.problem is None for scan in scans.values())
    assert len({hash(scan) for scan in scans.values()}) == 3


def test_nii_extension_and_malformed_names(bids: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = "sub-03/ct/sub-03_rec-bone_chunk-2_ct.nii"
    bad = {
        "sub-03/ct/sub-03_task-x_ct.nii.gz": "'task'",
        "sub-03/ct/sub-03_ce-x_acq-y_ct.nii.gz": "order",
        "sub-03/ct/sub-04_ct.nii.gz": "folder",
        "sub-03/ct/sub-03_ses-1_ct.nii.gz": "ses",
        "sub-03/ct/sub-03_run-x_ct.nii.gz": "number",
    }
    for rel in (good, *bad):
        (bids / rel).parent.mkdir(parents=True, exist_ok=True)
        tiny_image(rel).to_filename(bids / rel)
    (bids / "sub-03/sub-03_ct.nii.gz").write_bytes(b"")  # no datatype folder: silently not a CT
    with caplog.at_level(logging.WARNING, logger=discover.__name__):
        scans = find_scans(bids, participant_labels=["03"])
    assert relpaths(scans) == [good]
    assert scans[0].extension == ".nii"
    assert scans[0].entities == (("sub", "03"), ("rec", "bone"), ("chunk", "2"))
    for rel, reason in bad.items():
        assert any(rel in m and reason in m for m in caplog.messages), rel


def test_entities_ignore_folders_above_the_dataset(tmp_path: Path) -> None:
    # Stock pybids patterns search the absolute path and would read sub-zz / run-5 from here.
    bids = make_bids_dataset(tmp_path / "sub-zz" / "run-5_acq-no" / "bids")
    scans = by_relpath(find_scans(bids))
    assert [scan.subject for scan in scans.values()] == ["01", "02", "02"]
    assert dict(scans[SUB01].entities).get("run") is None
    with pytest.raises(NoInputError):
        find_scans(bids, filters={"run": 5})


def test_no_ct_at_all_is_no_input(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    (root / "sub-01" / "anat").mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "e", "BIDSVersion": "1.10.0"}')
    tiny_image("t1").to_filename(root / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    with pytest.raises(NoInputError, match="no CT image") as err:
        find_scans(root)
    assert err.value.exit_code == EXIT_NOINPUT


# --- participants and sessions -------------------------------------------------------------


@pytest.mark.parametrize("label", ["02", "sub-02"])
def test_participant_filter_with_or_without_prefix(bids: Path, label: str) -> None:
    assert relpaths(find_scans(bids, participant_labels=[label])) == [SUB02_SES1, SUB02_SES2]


def test_unknown_participant_is_no_input_naming_it(bids: Path) -> None:
    with pytest.raises(NoInputError, match=r"sub-03.*sub-xy") as err:
        find_scans(bids, participant_labels=["03", "sub-xy"])
    assert err.value.exit_code == EXIT_NOINPUT


def test_some_unknown_participants_warn_and_keep_the_others(
    bids: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger=discover.__name__):
        scans = find_scans(bids, participant_labels=["01", "sub-09"])
    assert relpaths(scans) == [SUB01]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "sub-09" in warnings[0] and "sub-01" not in warnings[0]


@pytest.mark.parametrize(
    ("labels", "expected"),
    [(["2"], [SUB02_SES2]), (["ses-1", "2"], [SUB02_SES1, SUB02_SES2])],
)
def test_session_filter(bids: Path, labels: list[str], expected: list[str]) -> None:
    assert relpaths(find_scans(bids, session_labels=labels)) == expected


def test_unknown_session_is_no_input(bids: Path) -> None:
    with pytest.raises(NoInputError, match="ses-7"):
        find_scans(bids, participant_labels=["01"], session_labels=["7"])


@pytest.mark.parametrize("label", ["../x", "a*", "a/b", "*", "/", "", "sub-", "01 ", "ü1"])
def test_bad_labels_are_usage_errors_naming_the_label(bids: Path, label: str) -> None:
    with pytest.raises(UsageError, match="participant label") as err:
        find_scans(bids, participant_labels=["01", label])
    assert repr(label) in str(err.value)
    with pytest.raises(UsageError, match="session label"):
        find_scans(bids, session_labels=[label])


def test_normalize_label() -> None:
    assert normalize_label("sub-01", "sub") == "01"
    assert normalize_label("01", "sub") == "01"
    assert normalize_label("ses-pre", "ses") == "pre"
    assert normalize_label("ses-pre", "ses-") == "pre"
    with pytest.raises(UsageError, match=re.escape("'sub-../x'")):
        normalize_label("sub-../x", "sub")


# --- filter file ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"ceagent": "iodine"}, [SUB01, SUB02_SES1]),
        ({"ce": "iodine"}, [SUB01, SUB02_SES1]),
        ({"acquisition": None}, [SUB02_SES1]),
        ({"acq": "*", "run": "*"}, [SUB02_SES2]),
        ({"run": "01"}, [SUB02_SES2]),
        ({"run": [1, 2]}, [SUB02_SES2]),
        ({"ses": ["1", "2"], "acquisition": "cta"}, [SUB02_SES2]),
        ({"datatype": "ct"}, [SUB02_SES1]),
        ({"suffix": "CT"}, [SUB02_SES1]),
        ({"extension": "nii.gz", "subject": "01"}, [SUB01]),
    ],
)
def test_filter_file_narrows(
    bids: Path, tmp_path: Path, query: dict[str, object], expected: list[str]
) -> None:
    filter_file = tmp_path / "filter.json"
    filter_file.write_text(json.dumps({"ct": query}))
    assert relpaths(find_scans(bids, filters=load_filter_file(filter_file))) == expected


def test_filter_file_returns_long_names(tmp_path: Path) -> None:
    filter_file = tmp_path / "filter.json"
    filter_file.write_text('{"ct": {"ce": "iodine", "rec": ["a", "b"], "acquisition": null}}')
    assert load_filter_file(filter_file) == {
        "ceagent": "iodine",
        "reconstruction": ["a", "b"],
        "acquisition": None,
    }
    filter_file.write_text("{}")
    assert load_filter_file(filter_file) == {}


def test_filter_matching_nothing_is_no_input(bids: Path) -> None:
    with pytest.raises(NoInputError, match="filter"):
        find_scans(bids, filters={"ceagent": "gadolinium"})


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"{not json", "invalid JSON"),
        (b"\xff\xfe{}", "UTF-8"),
        (b"[]", "JSON object"),
        (b'{"t1w": {}}', "t1w"),
        (b'{"ct": []}', "JSON object"),
        (b'{"ct": {"task": "rest"}}', "task"),
        (b'{"ct": {"ce": {"x": 1}}}', "'ce'"),
        (b'{"ct": {"run": true}}', "'run'"),
        (b'{"ct": {"ce": []}}', "'ce'"),
        (b'{"ct": {"ce": "a", "ceagent": "b"}}', "twice"),
    ],
)
def test_invalid_filter_file_is_usage_error(tmp_path: Path, content: bytes, reason: str) -> None:
    filter_file = tmp_path / "filter.json"
    filter_file.write_bytes(content)
    with pytest.raises(UsageError, match=reason) as err:
        load_filter_file(filter_file)
    message = str(err.value)
    assert str(filter_file) in message and "\n" not in message


def test_missing_filter_file_is_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read"):
        load_filter_file(tmp_path / "absent.json")


def test_invalid_filters_argument_is_usage_error(bids: Path) -> None:
    with pytest.raises(UsageError, match="'desc'"):
        find_scans(bids, filters={"desc": "x"})


# --- sidecar inheritance -------------------------------------------------------------------


def test_inheritance_root_and_file_level(bids: Path) -> None:
    scans = by_relpath(find_scans(bids))
    for rel, scan in scans.items():
        expected = {**ROOT_SIDECAR, **FILE_SIDECARS[rel]}
        assert dict(scan.metadata) == expected
        assert scan.sidecars == (bids / "ct.json", sidecar_of(bids, rel))
    assert scans[SUB01].metadata["ConvolutionKernel"] == FILE_SIDECARS[SUB01]["ConvolutionKernel"]
    assert scans[SUB02_SES1].metadata["ConvolutionKernel"] == ROOT_SIDECAR["ConvolutionKernel"]
    assert scans[SUB02_SES2].metadata["Manufacturer"] == FILE_SIDECARS[SUB02_SES2]["Manufacturer"]


def test_inheritance_levels_entities_and_suffix(bids: Path) -> None:
    sidecars = {
        "acq-cta_ct.json": {"Level": "root-acq", "AcqOnly": True},
        "sub-02/sub-02_ct.json": {"Level": "subject", "SubjectOnly": 2},
        "sub-02/sub-02_acq-other_ct.json": {"Level": "wrong acq"},
        "sub-02/ses-2/sub-02_ses-2_ct.json": {"Level": "session"},
        "sub-02/ses-2/sub-02_ses-2_run-01_ct.json": {"Level": "session-run", "Run": "padded"},
        "sub-02/ses-2/anat/sub-02_ses-2_T1w.json": {"Level": "other suffix"},
        "sub-01/anat/sub-01_ct.json": {"Level": "sub-01 datatype"},
    }
    for rel, content in sidecars.items():
        (bids / rel).write_text(json.dumps(content))
    scans = by_relpath(find_scans(bids))
    ses2 = scans[SUB02_SES2]
    assert [p.relative_to(bids).as_posix() for p in ses2.sidecars] == [
        "ct.json",
        "acq-cta_ct.json",
        "sub-02/sub-02_ct.json",
        "sub-02/ses-2/sub-02_ses-2_ct.json",
        "sub-02/ses-2/sub-02_ses-2_run-01_ct.json",
        sidecar_of(bids, SUB02_SES2).relative_to(bids).as_posix(),
    ]
    assert ses2.metadata["Level"] == "session-run"
    assert ses2.metadata["AcqOnly"] is True and ses2.metadata["SubjectOnly"] == 2
    ses1 = scans[SUB02_SES1]  # upper-case suffix: lower-case sidecars still apply; no acq
    assert ses1.metadata["Level"] == "subject" and "AcqOnly" not in ses1.metadata
    assert scans[SUB01].metadata["Level"] == "sub-01 datatype"
    assert scans[SUB01].metadata["AcqOnly"] is True and "SubjectOnly" not in scans[SUB01].metadata


def test_metadata_is_read_only_and_not_shared(bids: Path) -> None:
    (bids / "ct.json").write_text(json.dumps({"Nested": {"a": [1]}}))
    first, second, _ = find_scans(bids)
    with pytest.raises(TypeError):
        first.metadata["KVP"] = 1  # type: ignore[index]
    first.metadata["Nested"]["a"].append(2)
    assert second.metadata["Nested"] == {"a": [1]}


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b'{"KVP": 120,', "invalid JSON"), (b'{"Name": "\xe9\xff"}', "UTF-8"), (b"[1]", "object")],
)
def test_bad_sidecar_is_recorded_on_its_scan_only(bids: Path, content: bytes, reason: str) -> None:
    bad = sidecar_of(bids, SUB02_SES1)
    bad.write_bytes(content)
    scans = by_relpath(find_scans(bids))
    problem = scans[SUB02_SES1].problem
    assert problem is not None and reason in problem
    assert bad.relative_to(bids).as_posix() in problem and "\n" not in problem
    assert scans[SUB02_SES1].metadata["Manufacturer"] == ROOT_SIDECAR["Manufacturer"]
    assert scans[SUB02_SES1].sidecars == (bids / "ct.json",)
    for rel in (SUB01, SUB02_SES2):
        assert scans[rel].problem is None
        assert scans[rel].metadata["KVP"] == FILE_SIDECARS[rel]["KVP"]


def test_bad_root_sidecar_is_recorded_on_every_scan(bids: Path) -> None:
    (bids / "ct.json").write_text("{oops")
    scans = find_scans(bids)
    assert len(scans) == 3
    assert all(scan.problem and "ct.json" in scan.problem for scan in scans)


# --- file system ---------------------------------------------------------------------------


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(path.relative_to(root)): (path.lstat().st_mtime_ns, path.lstat().st_size)
        for path in [root, *sorted(root.rglob("*"))]
    }


def _set_writable(root: Path, writable: bool) -> None:
    bits = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        path.chmod((mode | stat.S_IWUSR) if writable else (mode & ~bits))


@pytest.fixture
def read_only_bids(bids: Path) -> Iterator[Path]:
    _set_writable(bids, False)
    try:
        yield bids
    finally:
        _set_writable(bids, True)


def test_read_only_dataset_works_and_nothing_is_written(read_only_bids: Path) -> None:
    before = _snapshot(read_only_bids)
    scans = find_scans(read_only_bids)
    assert relpaths(scans) == sorted(CT_RELPATHS)
    assert all(scan.problem is None for scan in scans)
    assert _snapshot(read_only_bids) == before
    assert not os.access(read_only_bids, os.W_OK) or os.geteuid() == 0


def test_symlinked_image_and_broken_link(bids: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    target = store / "blob.nii.gz"
    shutil.move(bids / SUB01, target)
    (bids / SUB01).symlink_to(target)
    (bids / SUB02_SES2).unlink()
    (bids / SUB02_SES2).symlink_to(store / "missing.nii.gz")
    scans = by_relpath(find_scans(bids))
    assert sorted(scans) == sorted(CT_RELPATHS)
    linked = scans[SUB01]
    assert linked.path == bids / SUB01 and linked.path.is_symlink() and linked.path.is_file()
    assert linked.problem is None
    problem = scans[SUB02_SES2].problem
    assert problem is not None and "broken symbolic link" in problem


def test_missing_dataset_description(bids: Path) -> None:
    (bids / "dataset_description.json").unlink()
    with pytest.raises(InputError, match=r"dataset_description\.json.*--skip-bids-validation"):
        find_scans(bids)
    assert relpaths(find_scans(bids, skip_validation=True)) == sorted(CT_RELPATHS)


@pytest.mark.parametrize("content", [b"{bad", b"\xff\xfe"])
def test_unreadable_dataset_description(bids: Path, content: bytes) -> None:
    (bids / "dataset_description.json").write_bytes(content)
    with pytest.raises(InputError, match="--skip-bids-validation") as err:
        find_scans(bids)
    assert "dataset_description.json" in str(err.value)
    assert len(find_scans(bids, skip_validation=True)) == 3


@pytest.mark.parametrize("skip", [False, True])
def test_dataset_description_not_an_object_is_input_error(bids: Path, skip: bool) -> None:
    # pybids itself fails on such a file, so skipping validation cannot help here.
    (bids / "dataset_description.json").write_text('"text"')
    with pytest.raises(InputError, match=r"dataset_description\.json: not a JSON object"):
        find_scans(bids, skip_validation=skip)


@pytest.mark.parametrize("skip", [False, True])
def test_bids_dir_must_be_an_existing_directory(tmp_path: Path, skip: bool) -> None:
    with pytest.raises(UsageError, match="no such directory"):
        find_scans(tmp_path / "absent", skip_validation=skip)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        find_scans(a_file, skip_validation=skip)


def test_relative_bids_dir(bids: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(bids.parent)
    scans = find_scans(Path(bids.name))
    assert [scan.path for scan in scans] == [bids / rel for rel in sorted(CT_RELPATHS)]
