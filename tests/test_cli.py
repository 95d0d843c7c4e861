"""ctadeface.cli: arguments, exit codes (BEP027), one-line errors; end to end on the tiny model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from bidsfixture import make_bids_dataset

from ctadeface import __version__
from ctadeface.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def bids(tmp_path):
    return make_bids_dataset(tmp_path / "bids")


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_underscore_and_dash_spellings_are_the_same():
    p = build_parser()
    a = p.parse_args(["b", "o", "participant", "--participant_label", "01", "--n_cpus", "2"])
    b = p.parse_args(["b", "o", "participant", "--participant-label", "01", "--nprocs", "2"])
    assert vars(a) == vars(b)
    assert p.parse_args(["b", "o", "group", "--no-tta"]).tta is False
    assert p.parse_args(["b", "o", "group", "--tta"]).tta is True


def test_version_prints_the_version_file(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"ctadeface {__version__}"
    assert __version__ == (ROOT / "version").read_text().strip()


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--participant-label", "../x"], "../x"),
        (["--participant-label", "a*"], "a*"),
        (["--participant-label", "a/b"], "a/b"),
        (["--fill", "zero"], "--fill"),
        (["--nprocs", "0"], "--nprocs"),
        (["--bogus"], "--bogus"),
    ],
)
def test_usage_errors_exit_64_with_one_line(capsys, bids, tmp_path, extra, words):
    code, _, err = _run(capsys, bids, tmp_path / "out", "participant", *extra)
    assert code == 64
    lines = err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in err


@pytest.mark.parametrize("where", [".", "sub-01", "sourcedata/out"])
def test_output_inside_the_raw_dataset_is_refused(capsys, bids, where):
    code, _, err = _run(capsys, bids, bids / where, "participant")
    assert code == 64 and "output_dir" in err
    assert not (bids / where / "dataset_description.json").exists() or where == "."


def test_unknown_participant_exits_66_naming_it(capsys, bids, tmp_path):
    code, _, err = _run(capsys, bids, tmp_path / "out", "participant", "--participant-label", "99")
    assert code == 66 and "sub-99" in err


def test_unknown_model_is_a_usage_error(capsys, bids, tmp_path):
    code, _, err = _run(capsys, bids, tmp_path / "out", "participant", "--model", "nonexistent")
    assert code == 64 and "nonexistent" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_run_py_is_a_thin_executable_shim(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and "participant" in proc.stdout
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), str(tmp_path / "nope"), str(tmp_path), "group"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 64 and "bids_dir is not a folder" in proc.stderr
    assert "Traceback" not in proc.stderr
