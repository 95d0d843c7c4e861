"""``python -m ctadeface`` is the same as ``run.py``."""

import sys

from ctadeface.cli import main

sys.exit(main())
