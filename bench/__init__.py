"""Benchmarks and evaluations, run by hand from the repository root (never by ``make test``):
``.venv/bin/python -m bench.NAME [options]``; ``make bench`` runs the speed benchmark.

Each script writes its table under ``bench/results/`` (or prints it) and says which machine and
command made it. The real head CTs are read from :data:`SHARED_DATA`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

#: The repository's root.
ROOT = Path(__file__).resolve().parent.parent
#: Where the scripts write their tables.
RESULTS = ROOT / "bench" / "results"
#: The shared real head CTs (``../shared/data`` beside the repository, or
#: ``$CTADEFACE_SHARED_DATA``).
SHARED_DATA = Path(os.environ.get("CTADEFACE_SHARED_DATA", ROOT.parent / "shared" / "data"))
#: Scratch space for inputs and outputs the scripts make (``--work`` overrides it).
WORK = Path(tempfile.gettempdir()) / "ctadeface-bench"
