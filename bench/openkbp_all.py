"""Run the participant level over every OpenKBP CT of ../shared/data once, and record the outcome.

Not part of CI. Builds a BIDS dataset of symbolic links in a temporary folder (one participant per
CT: ``train_pt1.nii.gz`` -> ``sub-train001``), runs ``run.py ... participant`` in one process as a
user would, then the group level, and counts what happened to each scan: its status from the
provenance of its defaced sidecar, or the one ERROR line that names it. A crash is a traceback,
an exit code other than 0 or 1, an "unexpected error" line, or a scan with no outcome at all.

    .venv/bin/python -m bench.openkbp_all [--model NAME|PATH] [--limit N] [-- extra CLI options]

Writes a markdown summary to bench/results/openkbp_all.md (``--results``) and prints it.
"""

from __future__ import annotations

import argparse
import collections
import datetime as _dt
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import RESULTS as RESULTS_DIR
from bench import ROOT, SHARED_DATA

DATA = SHARED_DATA / "openkbp"
TINY_MODEL = ROOT / "tests" / "data" / "tiny_model" / "Dataset900_TinyFace"
RESULTS = RESULTS_DIR / "openkbp_all.md"


def default_model() -> str:
    """The app's default model ``open`` when installed, else the tiny test model."""
    from ctadeface.segment.models import REGISTRY, default_roots, find_registry_model

    if find_registry_model(REGISTRY["open"], default_roots()) is not None:
        return "open"
    return str(TINY_MODEL)


def label_of(path: Path) -> str:
    """``train_pt7.nii.gz`` -> ``train007`` (BIDS labels are letters and digits only)."""
    match = re.fullmatch(r"([a-z]+)_pt(\d+)\.nii\.gz", path.name)
    if not match:
        raise SystemExit(f"unexpected file name {path.name}")
    return f"{match[1]}{int(match[2]):03d}"


def build_dataset(root: Path, images: list[Path]) -> dict[str, Path]:
    """A raw BIDS dataset of symlinks under ``root``; returns label -> source file."""
    (root / "dataset_description.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "OpenKBP CTs (links)", "BIDSVersion": "1.10.0", "DatasetType": "raw"})
    )
    labels: dict[str, Path] = {}
    for image in images:
        label = label_of(image)
        link = root / f"sub-{label}" / "anat" / f"sub-{label}_ct.nii.gz"
        link.parent.mkdir(parents=True)
        link.symlink_to(image.resolve())
        labels[label] = image
    return labels


def outcome(out: Path, label: str, errors: list[str]) -> tuple[str, str]:
    """(status, detail) of one participant after the run."""
    from ctadeface.outputs import read_provenance
    from ctadeface.status import Status

    sidecar = out / f"sub-{label}" / "anat" / f"sub-{label}_desc-defaced_ct.json"
    if sidecar.is_file():
        prov = read_provenance(sidecar)
        if prov is None:
            return "unreadable sidecar", str(sidecar)
        return str(prov.status), f"mask {prov.mask_volume_ml} ml"
    named = [line for line in errors if f"sub-{label}_" in line or f"sub-{label}/" in line]
    if len(named) == 1:
        return Status.FAILED, named[0]
    return "no outcome", f"{len(named)} error lines name it"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--model", default=None, help="default: 'open' if installed, else tiny")
    parser.add_argument("--limit", type=int, default=None, help="only the first N CTs")
    parser.add_argument(
        "--nprocs",
        type=int,
        default=max(1, (os.cpu_count() or 2) // 2),
        help="threads of the run (the app's --nprocs and OMP_NUM_THREADS)",
    )
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("extra", nargs="*", help="more options for the participant level")
    args = parser.parse_args()
    if any(a == "--nprocs" or a.startswith("--nprocs=") for a in args.extra):
        parser.error("give --nprocs before '--': it also sets OMP_NUM_THREADS of the run")
    images = sorted(args.data.glob("*.nii.gz"), key=lambda p: label_of(p))
    if not images:
        print(f"no CT under {args.data}; nothing to do")
        return 0
    images = images[: args.limit] if args.limit else images
    model = args.model or default_model()

    with tempfile.TemporaryDirectory(prefix="openkbp-") as scratch:
        bids, out = Path(scratch) / "bids", Path(scratch) / "out"
        labels = build_dataset(bids, images)
        command = [sys.executable, str(ROOT / "run.py"), str(bids), str(out), "participant"]
        command += ["--model", model, "--nprocs", str(args.nprocs), *args.extra]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.nprocs)}
        t0 = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
        seconds = time.perf_counter() - t0
        group = subprocess.run(
            [sys.executable, str(ROOT / "run.py"), str(bids), str(out), "group"],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        errors = [line for line in proc.stderr.splitlines() if ": ERROR: " in line]
        outcomes = {label: outcome(out, label, errors) for label in labels}
        rows = (out / "group_ct.tsv").read_text().splitlines() if group.returncode == 0 else []

    counts = collections.Counter(status for status, _ in outcomes.values())
    crashes = [
        *(["a traceback on stderr"] if "Traceback" in proc.stderr + group.stderr else []),
        *([f"exit code {proc.returncode}"] if proc.returncode not in (0, 1) else []),
        *[line for line in errors if "unexpected error" in line],
        *[f"sub-{k}: {d}" for k, (s, d) in outcomes.items() if s == "no outcome"],
    ]
    lines = [
        "# Participant level over all OpenKBP CTs",
        "",
        f"- date: {_dt.datetime.now(_dt.UTC).isoformat(timespec='seconds')}",
        f"- data: {args.data} ({len(images)} CTs)",
        f"- model: {model}",
        f"- command: `{' '.join(['run.py <bids> <out> participant', *command[5:]])}`",
        f"- exit code: {proc.returncode} (group level: {group.returncode}, "
        f"{max(0, len(rows) - 1)} rows)",
        f"- wall time: {seconds:.0f} s ({seconds / max(1, len(images)):.1f} s per CT, "
        "model loaded once)",
        f"- crashes: {len(crashes)}",
        "",
        "| status | scans |",
        "|---|---|",
        *(f"| {status} | {n} |" for status, n in sorted(counts.items())),
        "",
    ]
    if errors:
        lines += ["Error lines:", "", *(f"    {line}" for line in errors[:50]), ""]
    if crashes:
        lines += ["Crashes:", "", *(f"- {c}" for c in crashes), ""]
    text = "\n".join(lines)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(text)
    print(text)
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
