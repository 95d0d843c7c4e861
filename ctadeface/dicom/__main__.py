"""``python -m ctadeface.dicom``: the ``ctadeface-dicom`` command."""

import sys

from ctadeface.dicom.cli import main

sys.exit(main())
