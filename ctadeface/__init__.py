"""ctadeface: remove faces from CT angiography head scans with an nnU-Net v2 face mask.

The pipeline, one module per stage: ``discover`` -> ``io`` (load) -> ``segment`` -> ``deface``
-> ``outputs`` (write) -> ``verify`` -> ``report``; ``cli`` ties them together.
"""

from __future__ import annotations

from importlib import metadata as _metadata
from pathlib import Path as _Path


def _read_version() -> str:
    root = _Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "version").is_file():  # a source checkout
        return (root / "version").read_text().strip()
    try:
        return _metadata.version("ctadeface")
    except _metadata.PackageNotFoundError:  # pragma: no cover - not installed, no version file
        return "0+unknown"


__version__ = _read_version()
