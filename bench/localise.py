"""The head slab on every shared CT: where it ends, and what the face mask loses to it.

Run by hand (not in ``make test``; about 20 minutes on 2 cores)::

    .venv/bin/python -m bench.localise [--model open] [--out FILE.md]

For every CT of ``../shared/data`` (heads, OpenKBP) and the arch-to-vertex phantom
(``bench.arch_to_vertex``, cached in the bench work folder): the slab the fast strategy runs the
network on (``ctadeface.segment.localise``: what ends it, how deep it reaches). Where it cuts the
scan (where the body widens into the shoulders, 320 mm below the top of the body, or nothing
where the body begins in the trunk), the scan
is segmented twice, over the whole field of view and within the slab, and each mask
post-processed as the app does: the voxels the slab drops, how many of the differing voxels lie
above the slab's end, and the segmentation's time both ways.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import RESULTS, SHARED_DATA, WORK
from bench.benchmark import machine
from ctadeface.body import body_cells, occupied
from ctadeface.deface import postprocess
from ctadeface.hu import BODY_HU
from ctadeface.io import CTImage, load_ct
from ctadeface.segment.localise import SlabEnd, Superior, head_slab, superior_of
from ctadeface.segment.models import resolve_model
from ctadeface.segment.segmenter import FaceSegmenter, torch_settings


def scans() -> list[Path]:
    """Every shared CT, then the arch-to-vertex phantom (made here when missing)."""
    from bench.arch_to_vertex import arch_to_vertex

    found = sorted((SHARED_DATA / "heads").glob("*.nii.gz"))
    found += sorted((SHARED_DATA / "openkbp").glob("*.nii.gz"))
    long_scan = WORK / "cta_arch_to_vertex_512x512x800.nii.gz"
    if not long_scan.is_file():
        import nibabel as nib

        long_scan.parent.mkdir(parents=True, exist_ok=True)
        nib.save(arch_to_vertex(), str(long_scan))
    return [*found, long_scan]


def stored_depth(image: CTImage, up: Superior) -> np.ndarray:
    """Depth (mm) of each stored slice along the superior axis (``up`` on the stored (i, j, k)
    array) below the image's top slice."""
    axis = up.axis
    step = float(image.spacing[axis])
    index = np.arange(image.data.shape[axis]) * step
    return index[::-1] if up.sign > 0 else index


def measure(path: Path, segmenter: FaceSegmenter) -> str:
    """One table row."""
    image = load_ct(path)
    up = superior_of(image.affine)
    stored_up = Superior(axis=2 - up.axis, sign=up.sign)
    threshold = (BODY_HU - image.inter) / image.slope
    cells, steps = body_cells(image.data, image.spacing, threshold) or (None, [1, 1, 1])
    name = f"{path.parent.name}/{path.name.split('.')[0]}"
    axis = stored_up.axis
    extent = image.data.shape[axis] * float(image.spacing[axis])
    if cells is None:
        return f"| {name} | {extent:.0f} | no body | | | | | |"
    _, slab = head_slab(cells, steps, image.spacing, stored_up)
    row = f"| {name} | {extent:.0f} | {slab.end} | {slab.depth_mm:.0f} |"
    if slab.end == SlabEnd.SCAN:
        return row + " | | | |"
    hu = image.hu()
    t0 = time.perf_counter()
    everywhere = segmenter.predict(
        image.data,
        image.spacing,
        slope=image.slope,
        inter=image.inter,
        affine=image.affine,
        slab=False,
    )
    t1 = time.perf_counter()
    within = segmenter.predict(
        image.data, image.spacing, slope=image.slope, inter=image.inter, affine=image.affine
    )
    t2 = time.perf_counter()
    post_all = postprocess(everywhere, hu, image.spacing, in_place=True)
    post_slab = postprocess(within, hu, image.spacing, in_place=True)
    differ = post_all != post_slab
    depth = stored_depth(image, stored_up)
    top = float(depth[occupied(cells)[axis] * steps[axis]].min())
    end = top + slab.depth_mm
    shape = [1, 1, 1]
    shape[axis] = -1
    above = differ & (depth < end).reshape(shape)
    dropped = int((post_all & ~post_slab).sum())
    lowest = depth[np.flatnonzero(post_slab.any(axis=tuple(a for a in range(3) if a != axis)))]
    gap = f"{end - float(lowest.max()):.0f}" if lowest.size else "-"
    return row + f" {dropped} | {int(above.sum())} | {gap} | {t1 - t0:.1f} / {t2 - t1:.1f} |"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="open")
    p.add_argument("--out", type=Path, default=RESULTS / "localise.md")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    lines = [
        "# The head slab on the shared CTs",
        "",
        f"Machine: {machine()}. Command: `.venv/bin/python -m bench.localise --model "
        f"{args.model}`. Depth: how far below the top of the body the slab reaches (mm). Where "
        "it cuts the scan: the post-processed mask voxels it drops (whole field of view less "
        "slab), how many of the differing voxels lie above the slab's end, the distance from "
        "the lowest voxel of the slab's mask to the slab's end (mm), and the segmentation's "
        "seconds over the whole field of view / within the slab.",
        "",
        "| scan | extent mm | slab ends at | depth mm | voxels dropped | differing above the end "
        "| mask bottom to end mm | segment s (whole / slab) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as cache, torch_settings(args.threads):
        spec = resolve_model(args.model, Path(cache))
        segmenter = FaceSegmenter(spec, device="cpu")
        for path in scans():
            lines.append(measure(path, segmenter))
            print(lines[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
