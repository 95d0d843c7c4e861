"""Before/after pictures of the anatomy-driven face annotator on the real heads.

For each head CT (all of ``heads/`` and a sample of OpenKBP): sagittal, axial and coronal slices
through the nose tip with the mask overlaid, and a front skin render (depth-shaded first hit of
the -300 HU isosurface along the head's anterior axis) before and after filling the mask with
-1000 HU. Also a landmark check on OpenKBP: nose tip, lips and chin (most anterior skin points
of the midline profile) must lie inside the mask.

    .venv/bin/python -m bench.annotate_pictures [--out DIR] [--data DIR]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from scipy import ndimage as ndi

from bench import SHARED_DATA, WORK
from ctadeface.io import load_ct
from ctadeface.training.annotate import FaceLandmarks, annotate_face_landmarks

log = logging.getLogger("annotate_pictures")

OPENKBP_SAMPLE = (
    "train_pt1", "train_pt10", "train_pt25", "train_pt42", "train_pt57", "train_pt73",
    "train_pt99", "train_pt120", "train_pt151", "train_pt177", "validation_pt201",
    "validation_pt230",
)  # fmt: skip


def head_frame_volume(
    hu: np.ndarray, affine: np.ndarray, lm: FaceLandmarks, g: float = 1.0, extra=()
) -> tuple[np.ndarray, ...]:
    """Resample hu (and extra bool arrays) into the head frame (x right, y anterior, z up) at g
    mm, centred on the nose tip (or the volume centre), 240 x 260 x 260 mm."""
    centre = (
        lm.nose_tip
        if lm.nose_tip is not None
        else affine[:3, :3] @ ((np.array(hu.shape) - 1) / 2.0) + affine[:3, 3]
    )
    axes = lm.frame
    size = np.array([240.0, 260.0, 260.0])
    lo = np.array([-120.0, -220.0, -150.0])  # relative to the tip
    shape = tuple(int(v) for v in size / g)
    inv = np.linalg.inv(affine)
    # source index = inv @ (centre + axes @ (lo + g q))
    mat = inv[:3, :3] @ axes * g
    off = inv[:3, :3] @ (centre + axes @ lo) + inv[:3, 3]
    out = [ndi.affine_transform(hu, mat, off, output_shape=shape, order=1, cval=-1024.0)]
    for e in extra:
        f = ndi.affine_transform(e.astype(np.float32), mat, off, output_shape=shape, order=1)
        out.append(f >= 0.5)
    return tuple(out)


def skin_render(h: np.ndarray, level: float = -300.0) -> np.ndarray:
    """Depth-shaded first hit of the level isosurface looking from the front (+y) back."""
    hit = h > level
    ny = h.shape[1]
    first = ny - 1 - np.argmax(hit[:, ::-1, :], axis=1)
    anyhit = hit.any(1)
    depth = np.where(anyhit, first, 0).astype(float)
    gx, gz = np.gradient(ndi.gaussian_filter(depth, 1.0))
    shade = 1.0 / np.sqrt(1.0 + gx**2 + gz**2)
    d = (depth - depth[anyhit].min()) / max(1.0, np.ptp(depth[anyhit])) if anyhit.any() else depth
    img = np.where(anyhit, 0.25 + 0.75 * (0.5 * shade + 0.5 * d), 0.0)
    return img.T  # rows z, cols x


def overlay(ax, img: np.ndarray, mask: np.ndarray, title: str) -> None:
    g = np.clip((img + 1000.0) / 2500.0, 0, 1)
    rgb = np.stack([g, g, g], -1)
    rgb[mask] = 0.5 * rgb[mask] + 0.5 * np.array([1.0, 0.1, 0.1])
    ax.imshow(rgb, origin="lower")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def landmark_check(h: np.ndarray, m: np.ndarray) -> dict[str, bool]:
    """Nose tip, lips and chin: the most anterior midline skin points, in three height bands
    relative to the tip (grid of head_frame_volume at 1 mm: tip at x=120, z=150)."""
    band = h[117:124] > -300
    ny = h.shape[1]
    prof = np.where(band.any((0, 1)), ny - 1 - np.argmax(band.any(0)[::-1, :], axis=0), -1)
    out = {}
    for name, (z0, z1) in {"nose": (-5, 5), "lips": (-45, -15), "chin": (-85, -50)}.items():
        ks = np.arange(150 + z0, 150 + z1)
        ks = ks[(ks >= 0) & (ks < h.shape[2]) & (prof[ks] > 0)]
        if len(ks) == 0:
            continue
        k = ks[np.argmax(prof[ks])]
        out[name] = bool(m[117:124, prof[k] - 1 : prof[k] + 1, k].any())
    return out


def picture(path: Path, out_dir: Path) -> dict[str, object]:
    ct = load_ct(path)
    hu = ct.hu()
    t0 = time.perf_counter()
    mask, lm = annotate_face_landmarks(hu, ct.affine)
    dt = time.perf_counter() - t0
    filled = hu.copy()
    filled[mask] = -1000.0
    g = 1.0
    h, m = head_frame_volume(hu, ct.affine, lm, g, extra=(mask,))
    (hf,) = head_frame_volume(filled, ct.affine, lm, g)
    fig, axs = plt.subplots(2, 3, figsize=(15, 10))
    axs = axs.ravel()
    cx, cy, cz = 120, 220, 150
    overlay(axs[0], h[cx].T, m[cx].T, "sagittal (midline)")
    overlay(axs[1], h[:, :, cz].T, m[:, :, cz].T, "axial (nose tip)")
    overlay(axs[2], h[:, cy - 15].T, m[:, cy - 15].T, "coronal (15 mm behind tip)")
    axs[3].imshow(skin_render(h), origin="lower", cmap="gray", vmin=0, vmax=1)
    axs[3].set_title("skin -300 HU before", fontsize=8)
    axs[4].imshow(skin_render(hf), origin="lower", cmap="gray", vmin=0, vmax=1)
    axs[4].set_title("after fill -1000 HU", fontsize=8)
    for a in axs[3:]:
        a.axis("off")
    axs[5].remove()
    checks = landmark_check(h, m) if lm.found else {}
    fig.suptitle(
        f"{path.name}  found={lm.found} yaw/roll/pitch={lm.yaw:.0f}/{lm.roll:.0f}/{lm.pitch:.0f}"
        f"  orbits={lm.orbits_seen}  voxels={int(mask.sum())}  {dt:.1f}s  {checks}",
        fontsize=9,
    )
    out = out_dir / (path.name.replace(".nii.gz", "") + ".png")
    fig.savefig(out, dpi=60, bbox_inches="tight")
    plt.close(fig)
    return {"file": path.name, "seconds": round(dt, 1), "found": lm.found, **checks}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=WORK / "annotate_png")
    ap.add_argument("--data", type=Path, default=SHARED_DATA)
    ap.add_argument("--only", nargs="*", help="file name stems to render")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    files = sorted((args.data / "heads").glob("*.nii.gz"))
    files += [args.data / "openkbp" / f"{s}.nii.gz" for s in OPENKBP_SAMPLE]
    if args.only:
        files = [f for f in files if f.name.replace(".nii.gz", "") in args.only]
    for f in files:
        if f.exists():
            print(picture(f, args.out), flush=True)


if __name__ == "__main__":
    main()
