#!/usr/bin/env python3
"""BIDS App entry point: ``run.py bids_dir output_dir {participant,group} [options]``.

A thin shim over :func:`ctadeface.cli.main`; see ``run.py --help``. Started by a Python that
lacks the app's packages (e.g. the system python after ``make install``), it runs again with the
project's ``.venv/bin/python``, or says in one line how to call it.
"""

import importlib.util
import os
import sys
from pathlib import Path

#: Packages the app imports; a Python without them cannot run it.
NEEDED = ("nibabel", "bids", "torch", "nnunetv2")


def _missing() -> list[str]:
    return [name for name in NEEDED if importlib.util.find_spec(name) is None]


if __name__ == "__main__":
    missing = _missing()
    if missing:
        venv = Path(__file__).resolve().parent / ".venv"
        python = venv / "bin" / "python"
        if python.is_file() and Path(sys.prefix).resolve() != venv.resolve():
            os.execv(python, [str(python), __file__, *sys.argv[1:]])
        sys.stderr.write(
            f"ctadeface: error: {sys.executable} lacks {', '.join(missing)}: run 'make install' "
            "and call .venv/bin/ctadeface (or .venv/bin/python run.py)\n"
        )
        sys.exit(64)
    from ctadeface.cli import main

    sys.exit(main())
