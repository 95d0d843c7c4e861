"""Memory of one process over many scans: the participant level run scan by scan in one
process, its resident memory measured after the model load (the baseline) and after each scan,
and each scan's own peak (the kernel's high-water mark, reset before every scan through
``/proc/self/clear_refs``).

Run by hand (Linux; not in ``make test``)::

    .venv/bin/python -m bench.memory [--scans 10] [--input cta-phantom] [--out bench/results]

Writes ``memory.md`` (``memory_<input>.md`` for another input) under ``--out``: the baseline,
per scan the peak above the baseline (MiB and times the int16 volume) and the resident memory
after it, and the growth from the first scan to the last.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from bench import RESULTS, WORK
from bench.benchmark import machine, make_inputs, one_scan_dataset


def _status(field: str) -> float:
    """A /proc/self/status field in MiB (VmRSS: resident now; VmHWM: peak since reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    raise KeyError(field)


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--scans", type=int, default=10)
    p.add_argument("--input", default="cta-phantom")
    p.add_argument("--model", default="open")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--work", type=Path, default=WORK)
    args = p.parse_args(argv)

    import numpy as np

    from ctadeface import participant
    from ctadeface.allocator import one_arena
    from ctadeface.cli import load_pipeline
    from ctadeface.discover import find_scans
    from ctadeface.io import load_ct
    from ctadeface.segment import torch_settings
    from ctadeface.settings import Settings

    one_arena()  # as the command line does
    source = make_inputs(args.work)[args.input]
    bids = one_scan_dataset(source, args.work / "bids-memory", args.scans)
    out = args.work / "out-memory"
    shutil.rmtree(out, ignore_errors=True)
    int16_mib = float(np.prod(load_ct(source).data.shape)) * 2 / 2**20
    settings = Settings(
        bids_dir=bids, output_dir=out, analysis_level="participant", model=args.model, verify=False
    )
    pipeline = load_pipeline(settings)
    segmenter = pipeline.make_segmenter()
    rows = []
    with torch_settings(None):
        baseline = _status("VmRSS")
        for scan in find_scans(bids):
            _reset_peak()
            participant.run(
                pipeline.settings, [scan], lambda: segmenter, inference=pipeline.inference,
                model_key=pipeline.model_key,
            )  # fmt: skip
            rows.append((scan.subject, _status("VmHWM") - baseline, _status("VmRSS")))
    lines = [
        f"Machine: {machine()}; model `{args.model}`; input `{args.input}` "
        f"({int16_mib:.0f} MiB as int16); {args.scans} scans in one process, no verification.",
        "",
        f"Baseline (imports and model loaded, before the first scan): {baseline:.0f} MiB.",
        "",
        "| # | scan | peak above baseline MiB | x int16 volume | resident after MiB |",
        "|---|---|---|---|---|",
        *(
            f"| {n} | {s} | {peak:.0f} | {peak / int16_mib:.2f} | {rss:.0f} |"
            for n, (s, peak, rss) in enumerate(rows, 1)
        ),
        "",
        f"Resident after the last scan minus after the first: {rows[-1][2] - rows[0][2]:+.0f} MiB.",
        "",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    name = "memory.md" if args.input == "cta-phantom" else f"memory_{args.input}.md"
    (args.out / name).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
