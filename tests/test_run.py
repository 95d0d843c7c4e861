"""run.py, the BIDS App entry point: works from the project's venv and from any other Python."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from ctadeface import __version__
from tests import ROOT

RUN_PY = ROOT / "run.py"


def test_runs_with_the_project_venv() -> None:
    out = subprocess.run(
        [sys.executable, str(RUN_PY), "--version"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and out.stdout.strip() == f"ctadeface {__version__}"


def test_another_python_runs_it_through_the_venv() -> None:
    """The interpreter the venv was made from (without the app's packages, or with them)."""
    base = getattr(sys, "_base_executable", sys.executable)
    out = subprocess.run(
        [base, str(RUN_PY), "--version"], capture_output=True, text=True, timeout=120, cwd="/"
    )
    assert out.returncode == 0 and out.stdout.strip() == f"ctadeface {__version__}"


def test_without_the_packages_or_a_venv_it_says_how_to_call_it(tmp_path: Path) -> None:
    """A copy of run.py with no .venv beside it, started by a Python without site-packages."""
    alone = tmp_path / "run.py"
    shutil.copy(RUN_PY, alone)
    out = subprocess.run(
        [sys.executable, "-S", str(alone), "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 64 and out.stdout == ""
    (line,) = out.stderr.strip().splitlines()
    assert "make install" in line and ".venv/bin/ctadeface" in line and "nibabel" in line
