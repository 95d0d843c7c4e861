"""How long one synthetic phantom takes to make: ``make_phantom`` on a 64^3 grid at 3.5 mm.

Run by hand (not in ``make test``: a time depends on the machine and its load)::

    .venv/bin/python -m bench.phantom_speed [--runs 5]

Prints the min, median and max wall seconds over ``--runs`` runs after one warm-up run.
"""

from __future__ import annotations

import argparse
import statistics
import time

from ctadeface.training.phantom import make_phantom


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args(argv)
    seconds = []
    for run in range(args.runs + 1):
        t0 = time.perf_counter()
        make_phantom(11 + run, shape=(64, 64, 64), spacing=(3.5, 3.5, 3.5))
        seconds.append(time.perf_counter() - t0)
    counted = seconds[1:]
    print(
        f"make_phantom 64^3 at 3.5 mm, {args.runs} runs after one warm-up: "
        f"min {min(counted):.2f} s, median {statistics.median(counted):.2f} s, "
        f"max {max(counted):.2f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
