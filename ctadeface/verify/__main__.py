"""``python -m ctadeface.verify ORIGINAL DEFACED [--png OUT.png] [--mask MODE] [...]``.

Checks any pair of NIfTI files on the same grid (e.g. defaced by another tool): prints one JSON
object (the verdict, keys as in the sidecar's ``Verification``) and exits 1 when the person is
still identifiable (or, with ``--mask strict``, a face detector still fires), 0 otherwise (64/65
for a bad argument or unusable input, one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ctadeface.errors import ArgumentParser, CTADefaceError, InputError, OutputError
from ctadeface.io import load_ct
from ctadeface.records import to_json
from ctadeface.settings import MASK_MODES, check_face_threshold
from ctadeface.status import Status
from ctadeface.verify.figure import figure_png
from ctadeface.verify.verdict import Verifier, caption


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m ctadeface.verify",
        description="Test whether a defaced CT still shows who it is, and look for a face, on "
        "skin renders before and after defacing. Prints one JSON object; exits 1 when the "
        "person is still identifiable (strict: or a face is still detected), 0 otherwise.",
    )
    p.add_argument("original", type=Path, help="original CT (NIfTI)")
    p.add_argument("defaced", type=Path, help="defaced CT on the same grid (NIfTI)")
    p.add_argument("--png", type=Path, help="write a figure of renders and changed voxels here")
    p.add_argument(
        "--mask",
        choices=MASK_MODES,
        default="face",
        dest="mask_mode",
        help="the mask mode it was defaced with: face-like fails only in strict (default: face)",
    )
    p.add_argument(
        "--face-threshold",
        type=float,
        default=0.5,
        help="MTCNN probability that makes a render face-like (default: 0.5)",
    )
    return p


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Verify two NIfTI files; return the JSON object (raises CTADefaceError on bad input)."""
    args = _parser().parse_args(argv)
    threshold = check_face_threshold(args.face_threshold)
    a, b = load_ct(args.original), load_ct(args.defaced)
    if a.data.shape != b.data.shape:
        raise InputError(
            f"{args.defaced}: grid {b.data.shape} differs from the original's {a.data.shape}"
        )
    if not np.allclose(a.affine, b.affine, atol=1e-3):
        raise InputError(f"{args.defaced}: affine differs from the original's (not the same grid)")
    hu_a, hu_b = a.hu(), b.hu()
    result, before, after = Verifier(threshold, args.mask_mode).verify(hu_a, hu_b, a.affine)
    out = {"Original": str(args.original), "Defaced": str(args.defaced), **to_json(result)}
    if args.png:
        changed = hu_a != hu_b
        try:
            figure = figure_png(before, after, changed, hu_a, a.affine, caption=caption(result))
            args.png.write_bytes(figure)
        except OSError as e:
            raise OutputError(f"{args.png}: cannot write the figure ({e.strerror or e})") from e
        out["PNG"] = str(args.png)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: print one JSON object; 1 = identifiable (strict: or face-like),
    0 = defaced, 64/65 = bad usage or input (one line on stderr)."""
    try:
        out = run(argv)
    except CTADefaceError as e:
        sys.stderr.write(f"ctadeface.verify: {e}\n")
        return e.exit_code
    sys.stdout.write(json.dumps(out) + "\n")
    failing = {Status.IDENTIFIABLE} | ({Status.FACE_LIKE} if out["MaskMode"] == "strict" else set())
    return 1 if out["Status"] in failing else 0


if __name__ == "__main__":
    raise SystemExit(main())
