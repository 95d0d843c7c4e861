"""Group level at archive size: a synthetic output folder of many scans, the group level's wall
time and memory, the page's size, and how soon Chromium has it on screen.

Run by hand (not in ``make test``; about ten minutes for 10,000 scans on 2 cores)::

    .venv/bin/python -m bench.group_report [--scans 10000] [--runs 3] [--work DIR] [--out FILE.md]

The folder (made once under ``--work``, reused while ``--scans`` is the same): a raw BIDS dataset
of ``--scans`` CT scans (empty image files: the group level never opens them), 1 in 5 subjects with
two sessions, and its derivatives as the participant level leaves them for the scans it
processed: a defaced sidecar with a full provenance record (``ctadeface.provenance``, with 15
per-view scores; statuses, mask modes and values drawn to look like a large archive: 0.5 % not
processed, 0.3 % identifiable, 10 % strict mode, 0.2 % empty masks, 0.3 % implausible volumes), a
tiny figure (64 x 40 PNG) and its thumbnail (``ctadeface.verify.figure.thumbnail_jpeg``).

Measured, whole processes (``run.py RAW OUT group --skip-bids-validation``, ``--runs`` times):
wall, CPU and peak RSS (``bench.benchmark.measure``); once in this process, where the time goes
(discovery, reading the sidecars, the links, the page). Once with every thumbnail removed (the
group level makes them from the figures), and the time of one thumbnail from a full-size figure.
The size of ``group_report.html``. Chromium
(headless, real time, ``--runs`` times): the page's own marks (``performance.now()`` when its
script has shown the first page of rows, the animation frame that paints them, the load event;
all from the navigation's start), and the
browser process's wall time against the same browser on an empty page.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import RESULTS, ROOT, WORK
from bench.benchmark import machine, measure
from ctadeface import __version__
from ctadeface.deface import Fill, PostProcess, StrictParams
from ctadeface.discover import Scan, find_scans
from ctadeface.outputs import dataset_description, defaced_sidecar, output_paths, to_json
from ctadeface.provenance import ModelRecord, OutputHashes, Provenance, Request
from ctadeface.status import Status
from ctadeface.verify.figure import png_bytes, thumbnail_jpeg
from ctadeface.verify.identify import IdentityResult
from ctadeface.verify.render import THRESHOLDS_HU, YAWS_DEG
from ctadeface.verify.verdict import RenderScore, Verification

#: Seed of the drawn statuses and values.
SEED = 0
#: Pixels of the tiny figures (width, height), and of a participant level's figure.
FIGURE_PX = (64, 40)
FULL_FIGURE_PX = (960, 598)
#: Chromium's window for the timing runs (a laptop screen).
WINDOW = "1400,900"


def _model() -> ModelRecord:
    return ModelRecord(
        model="open",
        folder="ctadeface/data/models/open/Dataset900_Face/nnUNetTrainer__nnUNetPlans__3d_fullres",
        trainer="nnUNetTrainer",
        plans="nnUNetPlans",
        configuration="3d_fullres",
        input_orientation="RAS",
        folds=("all",),
        checkpoint_sha256={"fold_all/checkpoint_final.pth": "5b3726ef" + "0" * 56},
        licence="Apache-2.0",
        tta=False,
        device="cpu",
        tile_step_size=0.5,
        inference="fast",
        precision="fp32",
    )


def _provenance(rng: np.random.Generator, index: int) -> tuple[Provenance | None, bool]:
    """A drawn provenance record (None: the scan was not processed) and whether it has a
    figure."""
    u = rng.random()
    if u < 0.005:
        return None, False
    strict = rng.random() < 0.10
    mode = "strict" if strict else "face"
    volume = float(rng.normal(850 if strict else 650, 110))
    if rng.random() < 0.003:
        volume = float(rng.choice([20.0, 2100.0]))
    empty = rng.random() < 0.002
    identifiable = rng.random() < 0.003
    p_after = float(rng.beta(0.3, 3.0 if strict else 0.4))
    dlib = int(rng.random() < (0.01 if strict else 0.2))
    tested = int(rng.integers(3, 15))
    hits = int(rng.integers(2, tested)) if identifiable else int(rng.random() < 0.02)
    p = float(rng.uniform(1e-9, 0.04)) if identifiable else float(rng.uniform(0.1, 1.0))
    if hits == 0:
        p = 1.0
    if empty:
        status = Status.MASK_EMPTY
    elif identifiable:
        status = Status.IDENTIFIABLE
    elif p_after >= 0.5 or dlib:
        status = Status.FACE_LIKE
    else:
        status = Status.DEFACED
    identity = IdentityResult(tested, hits, 0.0165, p, 235)
    views = [(t, y) for t in THRESHOLDS_HU for y in YAWS_DEG]
    scores = tuple(
        RenderScore(
            t,
            y,
            0.999,
            round(p_after * float(rng.random()), 4),
            1,
            0,
            (i < hits) if i < tested else None,
        )
        for i, (t, y) in enumerate(views)
    )
    verification = Verification(
        status=Status.DEFACED if empty else status,
        mask_mode=mode,
        identity=identity,
        identity_before=IdentityResult(tested, tested - 1, 0.0165, 1e-12, 235),
        face_p_before=0.9999,
        face_p_after=round(p_after, 4),
        detections_before=15,
        detections_after=int(p_after >= 0.7),
        dlib_faces_before=12,
        dlib_faces_after=dlib,
        facenet_similarity=None,
        facenet_note="not available: FaceNet weights not found",
        face_threshold=0.5,
        per_render=scores,
    )
    sha = f"{index:064x}"
    provenance = Provenance(
        software={"ctadeface": __version__, "torch": "2.14.1", "nnunetv2": "2.8.1"},
        model=_model(),
        fill=Fill(policy="p10", value_hu=-1012.0, noise_std_hu=0.0, stored_value=-1012.0),
        post_processing=PostProcess(),
        strict=StrictParams() if strict else None,
        verification=verification,
        start_time="2026-12-01T00:00:00+00:00",
        duration_seconds=round(float(rng.normal(25, 4)), 3),
        input_sha256=sha,
        request=Request(sha, (sha,), "p10", mode, False, "fast, precision auto", True, True),
        output_sha256=OutputHashes(defaced=sha, mask=sha),
        mask_voxels=0 if empty else int(volume * 1000 / 0.27),
        mask_volume_ml=0.0 if empty else round(volume, 3),
        status=status,
    )
    return provenance, True


def make_folder(work: Path, n: int) -> tuple[Path, Path]:
    """The raw dataset and the output folder of ``n`` scans under ``work`` (made once)."""
    raw, out = work / f"group{n}" / "raw", work / f"group{n}" / "out"
    done = work / f"group{n}" / "complete"
    if done.is_file():
        return raw, out
    shutil.rmtree(work / f"group{n}", ignore_errors=True)
    raw.mkdir(parents=True)
    (raw / "dataset_description.json").write_text(
        json.dumps({"Name": "bench", "BIDSVersion": "1.10.0"})
    )
    made = 0
    subject = 0
    while made < n:
        subject += 1
        sessions = ["1", "2"] if subject % 5 == 0 and n - made >= 2 else [None]
        for ses in sessions:
            folder = raw / f"sub-{subject:05d}" / (f"ses-{ses}" if ses else "") / "anat"
            folder.mkdir(parents=True, exist_ok=True)
            stem = f"sub-{subject:05d}" + (f"_ses-{ses}" if ses else "")
            (folder / f"{stem}_ct.nii.gz").write_bytes(b"")
            made += 1
    out.mkdir(parents=True)
    (out / "dataset_description.json").write_text(to_json(dataset_description(raw, None)))
    rng = np.random.default_rng(SEED)
    figure = png_bytes(rng.integers(0, 255, (FIGURE_PX[1], FIGURE_PX[0], 3), dtype=np.uint8))
    thumbnail = thumbnail_jpeg(figure)
    for i, scan in enumerate(find_scans(raw, skip_validation=True)):
        provenance, has_figure = _provenance(rng, i)
        if provenance is None:
            continue
        paths = output_paths(out, scan)
        paths.defaced_json.parent.mkdir(parents=True, exist_ok=True)
        paths.defaced_json.write_text(to_json(defaced_sidecar(scan, provenance)[0]))
        if has_figure:
            paths.figure.parent.mkdir(parents=True, exist_ok=True)
            paths.figure.write_bytes(figure)
            paths.thumbnail.write_bytes(thumbnail)
    done.write_text(f"{n}\n")
    return raw, out


def _group_cmd(raw: Path, out: Path) -> list[str]:
    return [sys.executable, str(ROOT / "run.py"), str(raw), str(out), "group",
            "--skip-bids-validation"]  # fmt: skip


def stages(raw: Path, out: Path) -> dict[str, float]:
    """Seconds of each part of the group level, in this process."""
    from ctadeface.report import group_report_html, group_table, read_provenance_for, scan_links
    from ctadeface.report.table import to_tsv

    t = [time.perf_counter()]
    scans: list[Scan] = find_scans(raw, skip_validation=True)
    t.append(time.perf_counter())
    rows = group_table(read_provenance_for(out, scans))
    t.append(time.perf_counter())
    links = scan_links(out, scans)
    t.append(time.perf_counter())
    to_tsv(rows)
    group_report_html(rows, links)
    t.append(time.perf_counter())
    names = ("discover (pybids)", "read sidecars, rows", "links (stat)", "TSV and page")
    return {name: t[i + 1] - t[i] for i, name in enumerate(names)}


def _chromium_cmd(url: str, profile: str) -> list[str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise RuntimeError("Chromium is not installed")
    return [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", f"--window-size={WINDOW}", "--dump-dom", url,
    ]  # fmt: skip


def browser(page: Path) -> dict[str, float]:
    """One Chromium run on ``page`` and one on an empty page: the page's marks (ms) and the
    two processes' wall seconds."""
    marks: dict[str, float] = {}
    for name, url in (("blank", "about:blank"), ("page", page.as_uri())):
        profile = tempfile.mkdtemp(prefix="chromium-")
        t0 = time.perf_counter()
        proc = subprocess.run(_chromium_cmd(url, profile), capture_output=True, text=True)
        marks[f"{name}_wall_s"] = time.perf_counter() - t0
        shutil.rmtree(profile, ignore_errors=True)
        if proc.returncode != 0:
            raise RuntimeError(f"chromium failed: {proc.stderr[-2000:]}")
        if name == "page":
            body = re.search(r"<body([^>]*)>", proc.stdout)
            attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1) if body else ""))
            for key in ("ready-ms", "frame-ms", "load-ms"):
                marks[key] = float(attrs[key]) if key in attrs else float("nan")
    return marks


def thumbnail_ms(repeats: int = 20) -> float:
    """Milliseconds of :func:`thumbnail_jpeg` on a full-size figure (smooth shading and a black
    background, as the renders), median of ``repeats``."""
    h, w = FULL_FIGURE_PX[1], FULL_FIGURE_PX[0]
    y, x = np.mgrid[0:h, 0:w]
    shade = (127 + 127 * np.sin(x / 23.0) * np.cos(y / 17.0)) * ((x // 192 + y // 192) % 2)
    figure = png_bytes(np.repeat(shade.astype(np.uint8)[..., None], 3, axis=2))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        thumbnail_jpeg(figure)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _stats(values: list[float], digits: int = 2) -> str:
    return (
        f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-"
        f"{max(values):.{digits}f})"
    )


def benchmark(n: int, runs: int, work: Path) -> list[str]:
    t0 = time.perf_counter()
    raw, out = make_folder(work, n)
    made_s = time.perf_counter() - t0
    sidecars = sum(1 for _ in out.rglob("*_desc-defaced_ct.json"))
    parts = stages(raw, out)
    group = [measure(_group_cmd(raw, out)) for _ in range(runs)]
    page = out / "group_report.html"
    size_mb = page.stat().st_size / 1e6
    thumbs = list(out.rglob("*_desc-defacethumb_render.jpg"))
    for t in thumbs:
        t.unlink()
    remake = measure(_group_cmd(raw, out))
    remade = sum(1 for _ in out.rglob("*_desc-defacethumb_render.jpg"))
    views = [browser(page) for _ in range(runs)]
    full_ms = thumbnail_ms()
    lines = [
        f"# Group level at {n} scans",
        "",
        f"- machine: {machine()}",
        f"- command: `.venv/bin/python -m bench.group_report --scans {n} --runs {runs}`",
        f"- folder: {n} scans, {sidecars} with outputs ({n - sidecars} not processed), "
        f"{len(thumbs)} figures {FIGURE_PX[0]}x{FIGURE_PX[1]} px with thumbnails "
        f"({'reused' if made_s < 5 else f'made in {made_s:.0f} s'})",
        "",
        "| measure | median (min-max) | target |",
        "|---|---|---|",
        f"| group level, whole process, wall s (runs: {runs}) | "
        f"{_stats([g['wall_s'] for g in group])} | well under 60 |",
        f"| group level, CPU s | {_stats([g['cpu_s'] for g in group])} | |",
        f"| group level, peak RSS MiB | {_stats([g['peak_rss_mib'] for g in group], 0)} | |",
        f"| group level making all {remade} thumbnails, wall s (1 run) | "
        f"{remake['wall_s']:.2f} | |",
        f"| one thumbnail from a full-size figure ({FULL_FIGURE_PX[0]}x{FULL_FIGURE_PX[1]} px, "
        f"the participant level's), ms | {full_ms:.1f} | |",
        f"| group_report.html, MB | {size_mb:.2f} ({size_mb * 1000 / n:.2f} kB a scan) | <= 10 |",
        f"| Chromium: first page of rows shown (script), ms | "
        f"{_stats([v['ready-ms'] for v in views], 0)} | |",
        f"| Chromium: the frame that paints them, ms | "
        f"{_stats([v['frame-ms'] for v in views], 0)} | <= 3000 |",
        f"| Chromium: load event, ms | {_stats([v['load-ms'] for v in views], 0)} | |",
        f"| Chromium process on the page, wall s | {_stats([v['page_wall_s'] for v in views])} | |",
        f"| Chromium process on about:blank, wall s | "
        f"{_stats([v['blank_wall_s'] for v in views])} | |",
        "",
        "Where the group level's time goes (one run in the benchmark's process, s):",
        "",
        "| part | s |",
        "|---|---|",
        *(f"| {name} | {s:.2f} |" for name, s in parts.items()),
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--scans", type=int, default=10_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--work", type=Path, default=WORK)
    p.add_argument("--out", type=Path, default=RESULTS / "group_report.md")
    args = p.parse_args(argv)
    lines = benchmark(args.scans, args.runs, args.work)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
