"""The test suite; it mirrors the package's modules. Paths every test module may need."""

from pathlib import Path

#: The repository's root.
ROOT = Path(__file__).resolve().parent.parent
#: The tiny nnU-Net model committed for the tests (tests/data/tiny_model/README.md).
TINY_MODEL = ROOT / "tests" / "data" / "tiny_model"
#: The shared real head CTs beside the repository (../shared/data); tests that read them skip
#: when it is absent.
SHARED_DATA = ROOT.parent / "shared" / "data"
#: The Visible Human female head of SHARED_DATA.
VHP_HEAD = SHARED_DATA / "heads" / "vhp_female_head.nii.gz"
