"""Benchmark: our participant pipeline vs. the reference CTA-DEFACE pipeline vs. the I/O floor.

Run by hand (not in ``make test``), on a quiet machine::

    .venv/bin/python -m bench.benchmark [--model open] [--runs 3] [--out bench/results]

For each input (a 512x512x300 int16 CTA-sized phantom at 0.45x0.45x0.6 mm, a 512x512x800
arch-to-vertex phantom at the same spacing (``bench/arch_to_vertex.py``), and the shared heads of
../shared/data when present (:data:`SHARED_HEADS`)), alternating A/B/C within each repetition:

- (a) ours: ``run.py BIDS OUT participant --no-verify`` (default model, fill, post-processing
  and precision) on a one-scan dataset, as a subprocess; wall, CPU (user+sys) and peak RSS from
  ``wait4`` (what ``/usr/bin/time -v`` reports); the model load (from the run's log) and the
  scan's own time (its provenance ``DurationSeconds``: read, segment, fill, write, hashes) are
  reported apart; once per input also with ``--no-postprocess`` (untimed) for the mask before
  post-processing;
- (b) reference, as the upstream CTA-DEFACE script does it: ``nnUNetv2_predict_from_modelfolder``
  on a temp folder holding a ``_0000.nii.gz`` copy, then ``get_fdata``, fill with the 10th
  percentile, save as float64; same model folder, device and TTA setting (off). For a model that
  declares an input orientation (``open``: RAS) the temp copy is the image turned to it
  (``as_reoriented``, saved) and the mask is turned back, as anyone running nnU-Net on that model
  must do;
- (c) I/O floor: read the source and write one int16 image and one uint8 mask of the same grid
  with ``ctadeface.io``; the read+write time inside the process is reported apart.

Then (a) on a dataset of ``--batch`` (3) links to the input in one process, with the
verification off and on (per-scan times, whole-process wall time and peak RSS); ``--batch 0``
skips these, ``--no-reference`` skips (b) (and the ratios and Dice against it), for a device
whose time is short.

Ratios: a/b = (a)'s scan time / (b)'s wall time (the reference has no model to keep loaded:
it loads it for every scan); a/c = (a)'s scan time / (c)'s read+write time; both also for the
whole processes. It prints min/median/max of every measure, the Dice between the masks of (a)
and (b) before post-processing and after post-processing both with ``deface.postprocess``, and
writes ``results.md`` and ``results.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Collection
from pathlib import Path

import nibabel as nib
import numpy as np

from bench import RESULTS, ROOT, SHARED_DATA, WORK

PY = sys.executable
#: The heads of ../shared/data that are inputs (name -> path under it): the Visible Human head
#: (512x512x234, 1 mm, shoulders and a wrap), the MRIcroGL head (208x256x225, 1 mm), the Slicer
#: head (64x64x93, 3.2x3.2x1.5 mm) and one OpenKBP planning CT (128^3, ~4x4x2.5 mm, cut at the
#: eyes).
SHARED_HEADS = {
    "vhp-head": "heads/vhp_female_head.nii.gz",
    "mricrogl-head": "heads/mricrogl_head_ct_approx_hu.nii.gz",
    "slicer-head": "heads/slicer_ctheadaxial_lowres.nii.gz",
    "openkbp-ct": "openkbp/train_pt43.nii.gz",
}


#: Runs the measured command (argv[2:]) and writes its wall seconds and wait4 resource usage to
#: argv[1]. A process started from the benchmark's own (large: it imports torch to compare
#: masks) process would inherit that process's peak RSS: Linux keeps the peak of the memory a
#: child had before ``exec``, which is the parent's. This small interpreter is the parent instead.
_RUN = """
import os, sys, time
t0 = time.perf_counter()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - t0
with open(sys.argv[1], "w") as f:
    f.write(f"{wall} {usage.ru_utime + usage.ru_stime} {usage.ru_maxrss}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def measure(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, float]:
    """Run ``cmd``; return wall and CPU seconds, peak RSS (MiB) and its stdout. CPU and RSS are
    the kernel's resource usage of the command and its waited-for descendants (``wait4``, what
    ``/usr/bin/time -v`` reports), taken by a small interpreter that starts it (see ``_RUN``)."""
    with (
        tempfile.TemporaryFile("w+") as out,
        tempfile.TemporaryFile("w+") as err,
        tempfile.NamedTemporaryFile("r") as usage,
    ):
        proc = subprocess.run(
            [sys.executable, "-c", _RUN, usage.name, *cmd], stdout=out, stderr=err, env=env
        )
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {stderr[-2000:]}")
        wall, cpu, maxrss_kib = (float(v) for v in usage.read().split())
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mib": maxrss_kib / 1024.0, "stdout": stdout}


def make_inputs(
    work: Path,
    shared: Path = SHARED_DATA,
    shape: tuple[int, int, int] = (512, 512, 300),
    only: Collection[str] | None = None,
) -> dict[str, Path]:
    """The benchmark inputs as NIfTI files: the phantoms (made once and cached in ``work``;
    ``shape`` other than the default only for smoke runs of this script) and the heads of
    ``shared`` it holds; ``only``: the names wanted (default all), the others neither made nor
    returned."""
    inputs: dict[str, Path] = {}
    phantom_path = work / f"cta_phantom_{'x'.join(map(str, shape))}.nii.gz"
    default = shape == (512, 512, 300)
    phantom_name = "cta-phantom" if default else f"smoke-{'x'.join(map(str, shape))}"
    wanted = only is None or phantom_name in only
    if wanted and not phantom_path.exists():
        from ctadeface.training.phantom import make_phantom

        phantom = make_phantom(
            7, shape=shape, spacing=(0.45, 0.45, 0.6), storages=("int16",), crop=False
        )
        nib.save(phantom.to_nifti(), str(phantom_path))
    if wanted:
        inputs[phantom_name] = phantom_path
    if default and (only is None or "cta-arch-to-vertex" in only):
        long_path = work / "cta_arch_to_vertex_512x512x800.nii.gz"
        if not long_path.exists():
            from bench.arch_to_vertex import arch_to_vertex

            nib.save(arch_to_vertex(), str(long_path))
        inputs["cta-arch-to-vertex"] = long_path
    for name, path in SHARED_HEADS.items():
        if (shared / path).is_file() and (only is None or name in only):
            inputs[name] = shared / path
    return inputs


def one_scan_dataset(source: Path, root: Path, copies: int = 1) -> Path:
    """A BIDS dataset holding ``source`` (linked) as the only CT of sub-bench (or of
    sub-bench1..N for ``copies`` > 1)."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "bench", "BIDSVersion": "1.10.0"}')
    for n in range(copies):
        label = "bench" if copies == 1 else f"bench{n + 1}"
        anat = root / f"sub-{label}" / "anat"
        anat.mkdir(parents=True)
        os.symlink(source.resolve(), anat / f"sub-{label}_ct.nii.gz")
    return root


def run_ours_batch(
    source: Path, work: Path, model: str, device: str, copies: int, *, verify: bool = False
) -> dict:
    """(a) on a dataset of ``copies`` links to ``source``, one process (with ``verify``: the
    verification on): per-scan times (the next scan is read while one is segmented),
    whole-process wall time and peak RSS."""
    bids = one_scan_dataset(source, work / "bids-batch", copies)
    out = work / "ours-batch"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [PY, str(ROOT / "run.py"), str(bids), str(out), "participant", "--model", model]
    cmd += ["--device", device, "-w", str(work / "run-work")]
    stats = measure([*cmd, "--verify" if verify else "--no-verify"])
    scans = sorted(
        float(json.loads(p.read_text())["Defacing"]["DurationSeconds"])
        for p in out.rglob("*_desc-defaced_ct.json")
    )
    stats.pop("stdout", None)
    return {**stats, "scans_s": scans, "copies": copies}


def run_ours(
    source: Path, work: Path, model: str, device: str, extra: tuple[str, ...] = ()
) -> tuple[dict, np.ndarray]:
    """(a): the participant level as a user runs it; timings and the written mask."""
    bids = one_scan_dataset(source, work / "bids")
    out = work / "ours"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [PY, str(ROOT / "run.py"), str(bids), str(out), "participant", "--model", model]
    cmd += ["--device", device, "-w", str(work / "run-work")]
    stats = measure([*cmd, "--no-verify", "-v", *extra])
    log = next((out / "logs").glob("participant-*.log")).read_text()
    match = re.search(r"loaded model .*, in ([0-9.]+) s", log)
    stats["model_load_s"] = float(match.group(1)) if match else float("nan")
    from ctadeface.outputs import read_provenance

    prov = read_provenance(next(out.rglob("*_desc-defaced_ct.json")))
    stats["scan_s"] = prov.duration_seconds if prov else float("nan")
    stats["precision"] = prov.model.precision if prov else "?"
    mask = np.asanyarray(nib.load(str(next(out.rglob("*_mask.nii.gz")))).dataobj) > 0
    return stats, mask


REFERENCE_SCRIPT = textwrap.dedent(
    """
    import sys, subprocess, shutil, pathlib, tempfile
    import numpy as np, nibabel as nib
    from nibabel import orientations as o
    src, model, out, device, codes = sys.argv[1:6]
    # nnUNetv2_predict_from_modelfolder's entry point, run as its console script runs it
    predict = [sys.executable, "-c",
               "import sys; sys.argv[0] = 'nnUNetv2_predict_from_modelfolder'; "
               "from nnunetv2.inference.predict_from_raw_data import "
               "predict_entry_point_modelfolder as main; main()"]
    tmp = pathlib.Path(tempfile.mkdtemp())
    (tmp / "in").mkdir(); (tmp / "pred").mkdir()
    img = nib.load(src)
    if codes:  # the model's input orientation: give nnU-Net the image turned to it
        turn = o.ornt_transform(o.io_orientation(img.affine), o.axcodes2ornt(tuple(codes)))
        nib.save(img.as_reoriented(turn), tmp / "in" / "case_0000.nii.gz")
    else:
        shutil.copy(src, tmp / "in" / "case_0000.nii.gz")
    subprocess.run([*predict, "-i", str(tmp / "in"), "-o", str(tmp / "pred"), "-m", model,
                    "-f", "all", "--disable_tta", "-device", device], check=True,
                   stdout=subprocess.DEVNULL)
    data = img.get_fdata()
    mask = nib.load(str(tmp / "pred" / "case.nii.gz")).get_fdata() > 0
    if codes:
        back = o.ornt_transform(o.axcodes2ornt(tuple(codes)), o.io_orientation(img.affine))
        mask = o.apply_orientation(mask, back)
    data[mask] = np.percentile(data, 10)
    nib.save(nib.Nifti1Image(data, img.affine), out)
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), img.affine), out + ".mask.nii.gz")
    shutil.rmtree(tmp)
    """
)


def run_reference(
    source: Path, work: Path, model_folder: Path, device: str, orientation: str | None
) -> tuple[dict, np.ndarray]:
    """(b): the upstream way: nnU-Net CLI on a temp folder, get_fdata, p10, float64 save; the
    image turned to ``orientation`` for nnU-Net when the model declares one."""
    script = work / "reference.py"
    script.write_text(REFERENCE_SCRIPT)
    out = work / "reference_defaced.nii.gz"
    codes = orientation or ""
    stats = measure([PY, str(script), str(source), str(model_folder), str(out), device, codes])
    mask = np.asanyarray(nib.load(str(out) + ".mask.nii.gz").dataobj) > 0
    return stats, mask


FLOOR_SCRIPT = textwrap.dedent(
    """
    import sys, time, numpy as np
    from pathlib import Path
    from ctadeface.io import load_ct, write_image_atomic
    t0 = time.perf_counter()
    image = load_ct(Path(sys.argv[1]))
    out = Path(sys.argv[2])
    write_image_atomic(out / "image.nii.gz", image.data.astype(np.int16), image)
    write_image_atomic(out / "mask.nii.gz", np.zeros(image.data.shape, np.uint8), image)
    print(f"io_s={time.perf_counter() - t0:.4f}")
    """
)


def run_floor(source: Path, work: Path) -> dict:
    """(c): read the source, write an int16 image and a uint8 mask with our I/O."""
    script = work / "floor.py"
    script.write_text(FLOOR_SCRIPT)
    out = work / "floor"
    out.mkdir(exist_ok=True)
    stats = measure([PY, str(script), str(source), str(out)])
    stats["io_s"] = float(re.search(r"io_s=([0-9.]+)", stats["stdout"]).group(1))
    return stats


BASELINE_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import ctadeface.cli, ctadeface.discover, ctadeface.participant
    from ctadeface.segment.models import resolve_model
    from ctadeface.segment.segmenter import FaceSegmenter
    FaceSegmenter(resolve_model(sys.argv[1], Path(sys.argv[2])), device=sys.argv[3])
    """
)


def run_baseline(work: Path, model: str, device: str) -> dict:
    """Peak RSS of a process that imports the app and loads the model, but reads no scan."""
    script = work / "baseline.py"
    script.write_text(BASELINE_SCRIPT)
    return measure([PY, str(script), model, str(work / "cache"), device])


def summary(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, {platform.platform()}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="open", help="registry name or model folder (default open)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--work", type=Path, default=WORK)
    p.add_argument("--only", action="append", help="input name(s) to run (default: all)")
    p.add_argument("--device", default="cpu", help="cpu or cuda, for (a) and (b) alike")
    p.add_argument(
        "--batch", type=int, default=3,
        help="scans in the one-process runs of (a), verification off and on (default 3)",
    )  # fmt: skip
    p.add_argument(
        "--shared", type=Path, default=SHARED_DATA,
        help="the shared data folder, whose heads are inputs where present (/none: none)",
    )  # fmt: skip
    p.add_argument("--no-reference", action="store_true", help="skip (b), the reference pipeline")
    p.add_argument(
        "--reference-reader",
        help="make (b) read NIfTI with this nnU-Net reader (e.g. NibabelIO, which gives the "
        "same array as SimpleITKIO) on a copy of the model folder",
    )
    p.add_argument(
        "--phantom-shape",
        type=lambda t: tuple(int(n) for n in t.split(",")),
        default=(512, 512, 300),
        help="voxels i,j,k of the phantom (default 512,512,300; smaller only to smoke-test this "
        "script: such results say nothing about a CTA-sized scan)",
    )
    args = p.parse_args(argv)

    from ctadeface.deface import postprocess
    from ctadeface.io import load_ct
    from ctadeface.segment.models import resolve_model

    spec = resolve_model(args.model, args.work / "cache")
    folder = spec.folder
    args.work.mkdir(parents=True, exist_ok=True)
    if args.reference_reader:
        copy = args.work / "reference-model"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(folder, copy)
        plans = json.loads((copy / "plans.json").read_text())
        plans["image_reader_writer"] = args.reference_reader
        (copy / "plans.json").write_text(json.dumps(plans, indent=2))
        folder = copy
    results: dict[str, dict] = {}
    for name, source in make_inputs(args.work, args.shared, args.phantom_shape, args.only).items():
        runs: dict[str, list[dict]] = {"a": [], "b": [], "c": []}
        masks: dict[str, np.ndarray] = {}
        for i in range(args.runs):
            order = ("a", "b", "c") if i % 2 == 0 else ("b", "a", "c")
            for which in (w for w in order if not (args.no_reference and w == "b")):
                if which == "a":
                    stats, masks["a_post"] = run_ours(source, args.work, args.model, args.device)
                elif which == "b":
                    stats, masks["b"] = run_reference(
                        source, args.work, folder, args.device, spec.orientation
                    )
                else:
                    stats = run_floor(source, args.work)
                stats.pop("stdout", None)
                runs[which].append(stats)
                print(f"{name} run {i + 1} {which}: {stats}", flush=True)
        res: dict = {
            k: {m: summary([r[m] for r in v]) for m in v[0] if m != "precision"}
            for k, v in runs.items()
            if v
        }
        res["precision"] = runs["a"][0]["precision"]
        if args.batch > 0:
            for key, verify in (("batch", False), ("batch_verified", True)):
                res[key] = run_ours_batch(
                    source, args.work, args.model, args.device, args.batch, verify=verify
                )
                print(f"{name} {key} of {args.batch}: {res[key]}", flush=True)
        res["device"] = gpu_name() if args.device.startswith("cuda") else "cpu"
        a_scan = res["a"]["scan_s"]["median"]
        med = {k: res[k]["wall_s"]["median"] for k in res if k in "abc"}
        res["ratios"] = {
            "a/c": a_scan / res["c"]["io_s"]["median"],
            "a/c process": med["a"] / med["c"],
        }
        image = load_ct(source)
        if "b" in masks:
            from ctadeface.training.train import dice

            _, masks["a"] = run_ours(
                source, args.work, args.model, args.device, ("--no-postprocess",)
            )
            b_post = postprocess(masks["b"], image.hu_view(), image.spacing)
            res["ratios"] |= {"a/b": a_scan / med["b"], "a/b process": med["a"] / med["b"]}
            res["dice_a_b"] = dice(masks["a"], masks["b"])
            res["dice_a_b_postprocessed"] = dice(masks["a_post"], b_post)
        res["input_mib"] = os.path.getsize(source) / 2**20
        res["int16_volume_mib"] = float(np.prod(image.data.shape)) * 2 / 2**20
        res["rss_over_int16"] = res["a"]["peak_rss_mib"]["median"] / res["int16_volume_mib"]
        res["baseline_rss_mib"] = run_baseline(args.work, args.model, args.device)["peak_rss_mib"]
        res["rss_above_baseline_over_int16"] = (
            res["a"]["peak_rss_mib"]["median"] - res["baseline_rss_mib"]
        ) / res["int16_volume_mib"]
        results[name] = res
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"machine": machine(), **results}, indent=2))
    (args.out / "results.md").write_text(report(results, args.model, args.runs))
    print(report(results, args.model, args.runs))
    return 0


def report(results: dict[str, dict], model: str, runs: int) -> str:
    """The results table (markdown), medians with [min-max]."""

    def cell(stats: dict, key: str) -> str:
        s = stats[key]
        return f"{s['median']:.2f} [{s['min']:.2f}-{s['max']:.2f}]"

    lines = [f"Machine: {machine()}; model `{model}`; {runs} runs, median [min-max].", ""]
    if torch_device := next((r.get("device") for r in results.values()), None):
        lines[0] += f" Device: {torch_device}."
    lines += [
        "| input | what | process wall s | scan / I/O s | CPU s | peak RSS MiB |",
        "|---|---|---|---|---|---|",
    ]
    for name, res in results.items():
        inner = {"a": cell(res["a"], "scan_s"), "b": "-", "c": cell(res["c"], "io_s")}
        for key, title in (("a", "(a) ours"), ("b", "(b) reference"), ("c", "(c) I/O floor")):
            if key not in res:
                continue
            cells = [cell(res[key], m) for m in ("wall_s", "cpu_s", "peak_rss_mib")]
            lines.append(
                f"| {name} | {title} | {cells[0]} | {inner[key]} | " + " | ".join(cells[1:]) + " |"
            )
        r = res["ratios"]
        against_b = (
            f"**a/b = {r['a/b']:.3f}** (processes {r['a/b process']:.2f}), "
            if "a/b" in r
            else "no reference run, "
        )
        dice_b = (
            f"Dice(a,b) = {res['dice_a_b']:.5f} before / {res['dice_a_b_postprocessed']:.5f} "
            "after post-processing, "
            if "dice_a_b" in res
            else ""
        )
        lines.append(
            f"| {name} | {against_b}"
            f"**a/c = {r['a/c']:.2f}** (processes {r['a/c process']:.2f}), {dice_b}"
            f"model load {res['a']['model_load_s']['median']:.1f} s, "
            f"precision {res['precision']}, peak RSS = {res['rss_over_int16']:.1f} x the int16 "
            f"volume ({res['int16_volume_mib']:.0f} MiB); above the {res['baseline_rss_mib']:.0f} "
            f"MiB of imports and model: {res['rss_above_baseline_over_int16']:.1f} x | | | | |"
        )
        for key, how in (("batch", "in one run"), ("batch_verified", "in one run, verified")):
            if key not in res:
                continue
            batch = res[key]
            median = statistics.median(batch["scans_s"])
            lines.append(
                f"| {name} | (a) {batch['copies']} scans {how}: per scan median {median:.2f} s "
                f"[{min(batch['scans_s']):.2f}-{max(batch['scans_s']):.2f}], a/c = "
                f"{median / res['c']['io_s']['median']:.2f}; process {batch['wall_s']:.1f} s, "
                f"peak RSS {batch['peak_rss_mib']:.0f} MiB | | | | |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
