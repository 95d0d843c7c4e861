"""Where the time of one scan goes: each stage of the participant pipeline timed in process.

Run by hand on a quiet machine (not in ``make test``)::

    .venv/bin/python -m bench.stages [--model open] [--runs 3] [--threads N] [SCAN ...]

Default scans: the inputs of ``benchmark.py`` (its phantoms, cached, and the shared heads
present). Stages as ``participant.deface_scan`` runs them: hash the input, read, segment (fast
path), post-process, choose the fill, fill, write the mask, write the defaced image, hash the
outputs; with ``--verify`` also the verification's parts (the source
and the defaced image's changed box in HU, which the app makes only to verify; renders before
and after; the detectors: MTCNN and dlib HOG before and after, dlib's CNN after, in its worker
processes meanwhile; the descriptors and identity tests; the figure) and their sum against the
defacing's. The "tiles" column: the network's tiles run, of those nnU-Net runs over the whole
field of view (the fast strategy's debug log). The first run of each scan warms caches and is
dropped when there are more; the table gives the median of the rest. Writes ``stages.md``
(``stages_verify.md`` with ``--verify``) under ``--out``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from pathlib import Path

import numpy as np

from bench import RESULTS, WORK
from bench.benchmark import machine, make_inputs
from ctadeface.deface import PostProcess, apply_fill, choose_fill, postprocess
from ctadeface.io import load_ct, sha256_file, write_image_atomic
from ctadeface.participant import defaced_patch
from ctadeface.segment.models import resolve_model
from ctadeface.segment.segmenter import FaceSegmenter, torch_settings
from ctadeface.verify.figure import figure_png
from ctadeface.verify.render import render_skin
from ctadeface.verify.verdict import Verifier, caption

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
VERIFY_STAGES = (
    "source HU",
    "defaced HU",
    "renders",
    "detect",
    "identity",
    "figure",
)


class TileCount(logging.Handler):
    """Keeps the tiles run and the whole grid's from the fast strategy's debug line."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.last = "-"

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.startswith("network on") and isinstance(record.args, tuple):
            self.last = f"{record.args[0]}/{record.args[1]}"


def one_scan(
    segmenter: FaceSegmenter, path: Path, out: Path, verifier: Verifier | None = None
) -> dict[str, float]:
    """Seconds per stage for one scan (and its verification's, with a ``verifier``)."""
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
    hu = None
    if verifier is not None:
        hu = image.hu()
        lap("source HU")
    defaced = apply_fill(image, mask, fill, in_place=hu is None)
    lap("fill")
    write_image_atomic(out / "mask.nii.gz", mask.view(np.uint8), image)
    lap("write mask")
    write_image_atomic(out / "defaced.nii.gz", defaced, image)
    lap("write image")
    sha256_file(out / "mask.nii.gz")
    sha256_file(out / "defaced.nii.gz")
    lap("hash outputs")
    if verifier is not None and hu is not None:
        patch = defaced_patch(image, defaced, mask)
        lap("defaced HU")
        before = render_skin(hu, image.affine, threads=verifier.workers)
        after = render_skin(hu, image.affine, like=before, patch=patch, threads=verifier.workers)
        lap("renders")
        faces_b, faces_a = verifier.detector.detect_pair(before, after)
        lap("detect")
        result = verifier.judge(before, after, faces_b, faces_a)
        lap("identity")
        figure_png(before, after, mask, hu, image.affine, caption=caption(result))
        lap("figure")
    return times


def table(
    scans: dict[str, Path],
    model: str,
    runs: int,
    threads: int | None,
    work: Path,
    verify: bool = False,
) -> list[str]:
    """The markdown table of the stages' median seconds, one row per scan."""
    t0 = time.perf_counter()
    segmenter = FaceSegmenter(resolve_model(model, work / "cache"), device="cpu")
    load = time.perf_counter() - t0
    verifier = Verifier(workers=threads) if verify else None
    stages = STAGES + (VERIFY_STAGES if verify else ())
    tiles = TileCount()
    fast_log = logging.getLogger("ctadeface.segment.fast")
    fast_log.setLevel(logging.DEBUG)
    fast_log.addHandler(tiles)
    verify_cell = " verify / deface |" if verify else ""
    lines = [
        f"Machine: {machine()}; model `{model}` (load {load:.2f} s, precision "
        f"{segmenter.precision}); threads {threads or 'all'}; median of {runs} runs "
        "after one warm-up run; seconds.",
        "",
        "| scan | tiles | " + " | ".join(stages) + " | total |" + verify_cell,
        "|---|---|" + "---|" * (len(stages) + 1) + ("---|" if verify else ""),
    ]
    for name, path in scans.items():
        out = work / "stages"
        out.mkdir(exist_ok=True)
        timed = [one_scan(segmenter, path, out, verifier) for _ in range(runs + 1)][1:]
        medians = {s: statistics.median(r[s] for r in timed) for s in stages}
        cells = " | ".join(f"{medians[s]:.2f}" for s in stages)
        row = f"| {name} | {tiles.last} | {cells} | {sum(medians.values()):.2f} |"
        if verify:
            deface = sum(medians[s] for s in STAGES)
            row += f" {sum(medians[s] for s in VERIFY_STAGES) / deface:.2f} |"
        lines.append(row)
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
    p.add_argument("--verify", action="store_true", help="time the verification's parts too")
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    scans = {s.name: s for s in args.scans} or make_inputs(args.work)
    with torch_settings(args.threads):
        lines = table(scans, args.model, args.runs, args.threads, args.work, args.verify)
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / ("stages_verify.md" if args.verify else "stages.md")).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
