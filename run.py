#!/usr/bin/env python3
"""BIDS App entry point: ``run.py bids_dir output_dir {participant,group} [options]``.

A thin shim over :func:`ctadeface.cli.main`; see ``run.py --help``.
"""

import sys

from ctadeface.cli import main

if __name__ == "__main__":
    sys.exit(main())
