"""Where the time of one scan goes: each stage of the participant pipeline timed in process.

Run by hand on a quiet machine (not in ``make test``)::

    .venv/bin/python -m bench.stages [--model open] [--runs 3] [--threads N] [SCAN ...]

Default scans: the 512x512x300 CTA-sized phantom that ``benchmark.py`` caches and the Visible
Human head of ../shared/data. Stages as ``participant.deface_scan`` runs them: hash the input,
read, segment (fast path), post-process, choose the fill, fill in place, write the mask, write
the defaced image, hash the outputs. The first run of each scan warms caches and is dropped when
there are more; the table gives the median of the rest. Writes ``stages.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from bench import RESULTS, WORK
from bench.benchmark import machine, make_inputs
from ctadeface.deface import PostProcess, apply_fill, choose_fill, postprocess
from ctadeface.io import load_ct, sha256_file, write_image_atomic
from ctadeface.segment.models import resolve_model
from ctadeface.segment.segmenter import FaceSegmenter, torch_settings

STAGES = (
    "hash input",
    "read",
    "segment",
    "post-process",
    "fill value",
    "fill",
    "write mask",
    "write image",
    "hash outputs",
)


def one_scan(segmenter: FaceSegmenter, path: Path, out: Path) -> dict[str, float]:
    """Seconds per stage for one scan."""
    times: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        times[stage] = now - clock
        clock = now

    sha256_file(path)
    lap("hash input")
    image = load_ct(path)
    lap("read")
    mask = segmenter.predict(
        image.data, image.spacing, slope=image.slope, inter=image.inter, affine=image.affine
    )
    lap("segment")
    mask = postprocess(mask, image.hu_view(), image.spacing, PostProcess())
    lap("post-process")
    fill = choose_fill(image, "p10")
    lap("fill value")
    defaced = apply_fill(image, mask, fill, in_place=True)
    lap("fill")
    write_image_atomic(out / "mask.nii.gz", mask.view(np.uint8), image)
    lap("write mask")
    write_image_atomic(out / "defaced.nii.gz", defaced, image)
    lap("write image")
    sha256_file(out / "mask.nii.gz")
    sha256_file(out / "defaced.nii.gz")
    lap("hash outputs")
    return times


def table(
    scans: dict[str, Path], model: str, runs: int, threads: int | None, work: Path
) -> list[str]:
    """The markdown table of the stages' median seconds, one row per scan."""
    t0 = time.perf_counter()
    segmenter = FaceSegmenter(resolve_model(model, work / "cache"), device="cpu")
    load = time.perf_counter() - t0
    lines = [
        f"Machine: {machine()}; model `{model}` (load {load:.2f} s, precision "
        f"{segmenter.precision}); threads {threads or 'all'}; median of {runs} runs "
        "after one warm-up run; seconds.",
        "",
        "| scan | " + " | ".join(STAGES) + " | total |",
        "|---|" + "---|" * (len(STAGES) + 1),
    ]
    for name, path in scans.items():
        out = work / "stages"
        out.mkdir(exist_ok=True)
        timed = [one_scan(segmenter, path, out) for _ in range(runs + 1)][1:]
        medians = [statistics.median(r[s] for r in timed) for s in STAGES]
        cells = " | ".join(f"{m:.2f}" for m in medians)
        lines.append(f"| {name} | {cells} | {sum(medians):.2f} |")
        print(lines[-1], flush=True)
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("scans", nargs="*", type=Path)
    p.add_argument("--model", default="open")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--work", type=Path, default=WORK)
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    scans = {s.name: s for s in args.scans} or make_inputs(args.work)
    with torch_settings(args.threads):
        lines = table(scans, args.model, args.runs, args.threads, args.work)
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "stages.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
