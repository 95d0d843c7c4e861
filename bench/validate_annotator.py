"""Validate the anatomical annotator on synthetic phantoms: Dice against the exact mask.

Run by hand (not in ``make test``)::

    .venv/bin/python -m bench.validate_annotator [--first 3600000] [--count 50]

Each phantom is drawn by ``ctadeface.training.phantom.make_phantom(seed, max_voxels=2_000_000)``
(random head size, pose up to +-20 degrees, field-of-view crops, voxel order, spacing, contrast
phase, streaks, shells/sheets, padding), labelled by ``ctadeface.training.annotate.annotate_face``
from the image and affine alone, and compared with the phantom's exact mask. The default seeds
3,600,000-49 are held out from the annotator's tuning (tuning used 3,300,000-19 and
3,500,000-79; its 8 mm air margins, which match the phantoms' exact 8 mm margin, were chosen on
3,300,000-11). Criterion: Dice >= 0.9. Writes a markdown table to ``--out`` (default
bench/results/annotator.md) and prints the summary.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from bench import RESULTS
from bench.evaluate_open_model import phantom_extras
from ctadeface.training.annotate import annotate_face
from ctadeface.training.phantom import make_phantom
from ctadeface.training.train import dice


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--first", type=int, default=3_600_000, help="first phantom seed")
    p.add_argument("--count", type=int, default=50)
    p.add_argument("--max-voxels", type=int, default=2_000_000)
    p.add_argument("--out", type=Path, default=RESULTS / "annotator.md")
    args = p.parse_args(argv)
    rows, scores = [], []
    for seed in range(args.first, args.first + args.count):
        phantom = make_phantom(seed, max_voxels=args.max_voxels)
        start = time.perf_counter()
        mask = annotate_face(phantom.hu(), phantom.affine)
        seconds = time.perf_counter() - start
        score = dice(mask, phantom.face)
        scores.append(score)
        spec = phantom.spec
        rows.append(
            f"| {seed} | {'x'.join(map(str, spec.shape))} | "
            f"{'/'.join(f'{s:.1f}' for s in spec.spacing)} | "
            f"{'/'.join(f'{r:+.0f}' for r in spec.rotation_deg)} | {phantom_extras(spec)} | "
            f"{score:.3f} | {seconds:.1f} |"
        )
        print(rows[-1], flush=True)
    s = np.array(scores)
    summary = (
        f"mean **{s.mean():.4f}**, median {np.median(s):.4f}, min {s.min():.3f}, "
        f"{int((s < 0.9).sum())} of {len(s)} below 0.9, {int((s == 0).sum())} empty "
        f"(criterion: Dice >= 0.9)"
    )
    text = "\n".join(
        [
            "# Anatomical annotator vs exact phantom masks",
            "",
            f"Command: `.venv/bin/python -m bench.validate_annotator --first {args.first} "
            f"--count {args.count}`. Seeds {args.first}-{args.first + args.count - 1}; "
            f"phantoms of at most {args.max_voxels:,} voxels.",
            "",
            f"Dice: {summary}.",
            "",
            "| seed | shape | spacing mm | rotation deg (pitch/roll/yaw) | extras | Dice | s |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
