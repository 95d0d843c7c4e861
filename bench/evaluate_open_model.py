"""Measure a face model against the quality criteria of the open model (MODEL_CARD.md).

Not part of CI. Uses the app's own pipeline pieces (``FaceSegmenter``, ``deface.postprocess``,
``deface.choose_fill``/``apply_fill`` with the default ``p10`` fill, ``verify.verify``), so the
numbers are those of a default run (``--model open``, post-processing on, TTA off).

Sections (``--sections``, default all):

a. Dice against the exact mask on ``--phantoms`` synthetic heads whose seeds (3,000,000 + i)
   are disjoint from the training recipe's (seed * 1000 + i, seed < 1000; held-out 10**6 + ...),
   before and after post-processing.
b. Every head of ``../shared/data/heads``: the identity test on 15 skin renders after defacing
   and its control before (``ctadeface.verify``: rank 1 against the shipped gallery, the head
   itself left out), MTCNN and dlib detections, and intracranial voxels changed. *Intracranial*
   = voxels of
   0-100 HU (brain, CSF) that lie inside the bone (> 300 HU, closed by 6 mm) of their axial or
   coronal slice (slice-wise hole filling of the bone ring), opened by one voxel so that thin
   bridges (optic nerves) break, in 3D-connected parts of at least 20 mL (globes fall out).
   Heads used in training are marked "seen in training" (``--trained-on`` names them).
c. OpenKBP validation patients: are the nose tip, the lips and the chin inside the mask? The
   points come from the annotator (``annotate.annotate_face_landmarks``), not from a human: the
   nose tip, and the lips' and the chin's soft-tissue points (``lips``, ``soft_chin``: the most
   anterior skin point of the mid-sagittal profile, 2 mm inside the skin). On the stored grid a
   landmark's voxel must hold some of the patient and no radiopaque matter (-900 to 600 HU);
   one that does not (on a radiopaque skin marker, in air) moves to the first such voxel behind
   it, up to one voxel diagonal, or is off the patient (not counted) when there is none. Soft-
   tissue points, not the midpoint of nose tip and chin (often in the air beyond the mask's
   margin) nor the bony menton (bone, outside any correct mask).
d. Robustness: every OpenKBP CT segmented in process (errors counted, mask volumes), plus a
   brain-only crop (a real head above its orbits), a neck-only crop (an OpenKBP CT below the
   chin) and a synthetic abdomen: their masks should be empty or tiny (a top crop of a full head
   may still hold forehead, which is face: the table shows the annotator's mL inside the crop).
e. Time of one CTA-sized phantom (512 x 512 x 300, 0.45 x 0.45 x 0.6 mm): segmentation plus
   post-processing on ``--threads`` CPU threads.

    .venv/bin/python -m bench.evaluate_open_model [--model open|PATH] [--sections abcde]

Writes markdown to ``--results`` (default bench/results/open_model.md) and prints it.
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy import ndimage

from bench import RESULTS as RESULTS_DIR
from bench import SHARED_DATA
from ctadeface.deface import PostProcess, apply_fill, choose_fill, postprocess
from ctadeface.io import CTImage, load_ct
from ctadeface.segment.models import resolve_model
from ctadeface.segment.segmenter import FaceSegmenter, torch_settings
from ctadeface.training.phantom import Phantom, PhantomSpec
from ctadeface.training.train import dice

log = logging.getLogger("evaluate_open_model")

DATA = SHARED_DATA
RESULTS = RESULTS_DIR / "open_model.md"
PHANTOM_SEED0 = 3_000_000
POST = PostProcess()
Segment = Callable[[np.ndarray, tuple[float, float, float]], np.ndarray]


def default_mask(
    seg: FaceSegmenter, hu: np.ndarray, spacing: tuple[float, ...], affine: np.ndarray
) -> np.ndarray:
    """The mask of a default run: the model's mask, post-processed when the model asks for it
    (the ``open`` registry model does; a model folder given by path is post-processed too, as
    it is meant to become ``open``)."""
    mask = seg.predict(hu, spacing, affine=affine)
    return postprocess(mask, hu, spacing, POST)


# --- a. phantoms ------------------------------------------------------------------------------


def phantom_extras(spec: PhantomSpec) -> str:
    """What a phantom shows besides anatomy: contrast phase, shell or sheet, streaks, padding."""
    extras = [spec.phase]
    if spec.shell is not None:
        extras.append("shell" if spec.shell.period_mm > 0 else "sheet")
    if spec.streaks:
        extras.append("streaks")
    if spec.pad_value is not None:
        extras.append(f"pad {spec.pad_value:.0f}")
    return ", ".join(extras)


#: Where the errors of a phantom mask lie, in the phantom's head frame (mm): within this of the
#: limits of mask-definition.md that cut through continuous tissue.
ZONES = ("hyoid (lower limit)", "forehead top", "posterior line (before the ears)", "elsewhere")
ZONE_MM = {"hyoid": 14.0, "top": 12.0, "posterior": 10.0}


def error_zones(mask: np.ndarray, ph: Phantom) -> dict[str, tuple[float, float]]:
    """(false positive mL, false negative mL) of ``mask`` against the phantom's exact mask in
    each of ``ZONES``: within ``ZONE_MM`` above the lower limit, below the upper limit, or in
    front of the posterior limit (between the other two), else elsewhere."""
    from ctadeface.training.phantom import Y_POST, Z_FOREHEAD, Z_HYOID

    voxel_ml = abs(float(np.linalg.det(ph.affine[:3, :3]))) / 1000.0
    voxel_to_head = np.linalg.inv(ph.head_to_world) @ ph.affine

    def in_zones(wrong: np.ndarray) -> list[float]:
        head = np.argwhere(wrong) @ voxel_to_head[:3, :3].T + voxel_to_head[:3, 3]
        low = head[:, 2] < Z_HYOID + ZONE_MM["hyoid"]
        top = ~low & (head[:, 2] > Z_FOREHEAD - ZONE_MM["top"])
        back = ~low & ~top & (head[:, 1] < Y_POST + ZONE_MM["posterior"])
        return [float(sel.sum()) * voxel_ml for sel in (low, top, back, ~(low | top | back))]

    fp, fn = in_zones(mask & ~ph.face), in_zones(ph.face & ~mask)
    return {zone: (a, b) for zone, a, b in zip(ZONES, fp, fn, strict=True)}


def section_phantoms(seg: FaceSegmenter, n: int, max_voxels: int) -> list[str]:
    from ctadeface.training.phantom import make_phantom

    rows, raw, post = [], [], []
    zones: dict[str, list[tuple[float, float]]] = {zone: [] for zone in ZONES}
    for i in range(n):
        ph = make_phantom(PHANTOM_SEED0 + i, max_voxels=max_voxels)
        hu = ph.hu()
        spacing = tuple(float(s) for s in ph.spec.spacing)
        mask = seg.predict(hu, spacing, affine=ph.affine)
        pp = postprocess(mask, hu, spacing, POST)
        raw.append(dice(mask, ph.face))
        post.append(dice(pp, ph.face))
        for zone, errors in error_zones(pp, ph).items():
            zones[zone].append(errors)
        s = ph.spec
        rows.append(
            f"| {PHANTOM_SEED0 + i} | {'x'.join(map(str, s.shape))} | "
            f"{'/'.join(f'{v:.1f}' for v in s.spacing)} | {phantom_extras(s)} | "
            f"{raw[-1]:.3f} | {post[-1]:.3f} |"
        )
        log.info("phantom %d: Dice %.3f / %.3f", i, raw[-1], post[-1])
    mean_zones = {zone: np.mean(errs, axis=0) for zone, errs in zones.items()}
    out = [
        f"## a. Dice on {n} held-out phantoms (seeds {PHANTOM_SEED0}..{PHANTOM_SEED0 + n - 1})",
        "",
        "| | model mask | after post-processing |",
        "|---|---|---|",
        f"| mean | {np.mean(raw):.4f} | {np.mean(post):.4f} |",
        f"| median | {np.median(raw):.3f} | {np.median(post):.3f} |",
        f"| min | {np.min(raw):.3f} | {np.min(post):.3f} |",
        f"| criterion: mean >= 0.95 | {'PASS' if np.mean(raw) >= 0.95 else 'FAIL'} | "
        f"{'PASS' if np.mean(post) >= 0.95 else 'FAIL'} |",
        "",
        "Where the errors after post-processing lie (mean mL per phantom; zones in the phantom's "
        f"head frame: within {ZONE_MM['hyoid']:.0f} mm above the lower limit, "
        f"{ZONE_MM['top']:.0f} mm below the upper limit, {ZONE_MM['posterior']:.0f} mm in front "
        "of the posterior limit):",
        "",
        "| zone | false positive mL | false negative mL |",
        "|---|---|---|",
        *[f"| {zone} | {fp:.1f} | {fn:.1f} |" for zone, (fp, fn) in mean_zones.items()],
        "",
        "<details><summary>per phantom</summary>",
        "",
        "| seed | shape | spacing mm | extras | Dice model | Dice post |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        "</details>",
        "",
    ]
    return out


# --- b. real heads ----------------------------------------------------------------------------


def world_axis(affine: np.ndarray, world: int) -> int:
    """The array axis that runs closest to world axis ``world`` (0 = R, 1 = A, 2 = S)."""
    return int(np.argmax(np.abs(affine[world, :3]) / np.linalg.norm(affine[:3, :3], axis=0)))


def axial_axis(affine: np.ndarray) -> int:
    """The array axis that runs closest to the world's superior axis."""
    return world_axis(affine, 2)


def _enclosed(bone: np.ndarray, ax: int, spacing: Sequence[float], close_mm: float) -> np.ndarray:
    """Voxels enclosed by the (closed) bone of their slice across array axis ``ax``."""
    inplane = [s for a, s in enumerate(spacing) if a != ax]
    rad = [max(1, round(close_mm / s)) for s in inplane]
    yy, xx = np.ogrid[-rad[0] : rad[0] + 1, -rad[1] : rad[1] + 1]
    disk = (yy / rad[0]) ** 2 + (xx / rad[1]) ** 2 <= 1.0
    out = np.zeros_like(bone)
    for k in range(bone.shape[ax]):
        sl = [slice(None)] * 3
        sl[ax] = k
        b = bone[tuple(sl)]
        if b.any():
            closed = ndimage.binary_closing(np.pad(b, [(r, r) for r in rad]), disk)
            closed = closed[rad[0] : closed.shape[0] - rad[0], rad[1] : closed.shape[1] - rad[1]]
            out[tuple(sl)] = ndimage.binary_fill_holes(closed) & ~closed
    return out


def intracranial(
    hu: np.ndarray, affine: np.ndarray, spacing: Sequence[float], min_ml: float = 20.0
) -> np.ndarray:
    """Brain and CSF inside the skull (see the module docstring); bool, same shape as ``hu``.

    Voxels of 0-100 HU enclosed by bone (> 300 HU, closed by 6 mm) in their axial or coronal
    slice, opened by one voxel, in connected parts of at least ``min_ml`` (globes and other
    small enclosed soft tissue fall out).
    """
    bone = hu > 300.0
    enclosed = _enclosed(bone, world_axis(affine, 2), spacing, 6.0)
    enclosed |= _enclosed(bone, world_axis(affine, 1), spacing, 6.0)
    soft = enclosed & (hu >= 0.0) & (hu <= 100.0)
    soft = ndimage.binary_opening(soft, np.ones((3, 3, 3), bool))
    labels, n = ndimage.label(soft)
    if n == 0:
        return soft
    sizes = ndimage.sum_labels(soft, labels, range(1, n + 1)) * float(np.prod(spacing)) / 1000
    keep = np.flatnonzero(sizes >= min_ml) + 1
    return np.isin(labels, keep)


def section_heads(seg: FaceSegmenter, heads: Sequence[Path], trained_on: Sequence[str]) -> list:
    from ctadeface.verify.verdict import Verifier

    verifier = Verifier()
    out = [
        "## b. Real heads: identity and detection on 15 skin renders, default settings (fill "
        "p10, post-processing on, face mask mode)",
        "",
        "| head | in training | identity after: rank 1 / views (chance, p) | originals: rank 1 / "
        "views (p) | MTCNN p before -> after | dlib faces after | mask mL | intracranial voxels "
        "| changed inside | criterion |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for path in heads:
        image = load_ct(path)
        hu = image.hu()
        mask = default_mask(seg, hu, image.spacing, image.affine)
        fill = choose_fill(image, "p10")
        defaced = apply_fill(image, mask, fill, seed=0)
        dhu = replace(image, data=defaced).hu()
        result, _, _ = verifier.verify(hu, dhu, image.affine)
        brain = intracranial(hu, image.affine, image.spacing)
        changed = int((brain & mask).sum())
        after, before = result.identity, result.identity_before
        ok = not after.identified and before.identified and changed == 0
        seen = any(t in path.name for t in trained_on)
        ml = mask.sum() * float(np.prod(image.spacing)) / 1000.0
        out.append(
            f"| {path.name} | {'seen in training' if seen else 'held out'} | "
            f"{after.rank1_views}/{after.views_tested} ({after.chance:.3f}, {after.p:.2g}) | "
            f"{before.rank1_views}/{before.views_tested} ({before.p:.2g}) | "
            f"{result.face_p_before:.3f} -> {result.face_p_after:.3f} | "
            f"{result.dlib_faces_after} | {ml:.0f} | {int(brain.sum())} | {changed} | "
            f"{'PASS' if ok else 'FAIL'} |"
        )
        log.info("%s: %s", path.name, out[-1])
    out += [
        "",
        "Criterion (docs/mask-definition.md): the defaced renders do not pick out their own "
        "original among the gallery more often than chance (identity p >= 0.05) while the "
        "originals are picked out (p < 0.05: the original at one isosurface level against its "
        "render at the next), and no intracranial voxel changes. Detection (MTCNN, dlib) is "
        "reported, not judged, in face mask mode.",
        "",
    ]
    return out


# --- c. landmarks -----------------------------------------------------------------------------


#: A landmark's stored voxel at or below this holds no patient (air and its noise).
LANDMARK_AIR_HU = -900.0


def _nearest_voxel(
    affine: np.ndarray, shape: Sequence[int], point: np.ndarray
) -> tuple[int, int, int] | None:
    """Index of the stored voxel nearest a world point; None outside the grid."""
    ijk = np.rint((np.linalg.inv(affine) @ np.append(point, 1.0))[:3]).astype(int)
    if np.any(ijk < 0) or np.any(ijk >= shape):
        return None
    return int(ijk[0]), int(ijk[1]), int(ijk[2])


def _landmark_voxel(
    hu: np.ndarray, affine: np.ndarray, point: np.ndarray, posterior: np.ndarray
) -> tuple[tuple[int, int, int] | None, float]:
    """The stored-grid voxel of a soft-tissue landmark, and how far (mm) it was moved.

    The annotator places its landmarks on a 2 mm working grid, where a radiopaque skin marker
    (an RT planning bead) blurs into the skin, and where a point 2 mm inside the skin may fall in
    the gap of open lips. On the stored grid the landmark is its own voxel when that holds some
    of the patient and no radiopaque matter (above :data:`LANDMARK_AIR_HU`, below the
    annotator's bone threshold: a partial-volume skin voxel counts, as the point lies in its
    tissue part); otherwise the first such voxel behind it, stepping ``posterior`` (a world
    unit vector) by a quarter of the finest voxel up to one voxel diagonal. None when there is
    none: the landmark is off the patient.
    """
    from ctadeface.training.annotate import AnnotateParams

    bone_hu = AnnotateParams().bone_hu
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    reach, step = float(np.linalg.norm(spacing)), 0.25 * float(spacing.min())
    for t in np.arange(0.0, reach + 1e-6, step):
        ijk = _nearest_voxel(affine, hu.shape, point + t * posterior)
        if ijk is not None and LANDMARK_AIR_HU < float(hu[ijk]) < bone_hu:
            return ijk, float(t)
    return None, 0.0


def section_landmarks(seg: FaceSegmenter, paths: Sequence[Path]) -> list[str]:
    from ctadeface.training.annotate import annotate_face_landmarks

    counts = {"nose tip": [0, 0], "lips": [0, 0], "chin": [0, 0], "all three": [0, 0]}
    rows = []
    for path in paths:
        image = load_ct(path)
        hu = image.hu()
        _, marks = annotate_face_landmarks(hu, image.affine)
        if not marks.found or marks.nose_tip is None:
            rows.append(f"| {path.name} | no face found by the annotator | | | |")
            continue
        mask = default_mask(seg, hu, image.spacing, image.affine)
        posterior = -np.asarray(marks.frame)[:, 1]
        got: dict[str, bool | None] = {}
        cells = []
        for key, point in (
            ("nose tip", marks.nose_tip),
            ("lips", marks.lips),
            ("chin", marks.soft_chin),
        ):
            if point is None:
                got[key], cell = None, "-"
            else:
                ijk, moved = _landmark_voxel(hu, image.affine, np.asarray(point), posterior)
                got[key] = None if ijk is None else bool(mask[ijk])
                cell = "off the patient" if ijk is None else ("yes" if got[key] else "**no**")
                if ijk is not None and moved > 0:
                    start = _nearest_voxel(image.affine, hu.shape, np.asarray(point))
                    origin = "outside the grid" if start is None else f"{hu[start]:.0f} HU"
                    cell += f" (moved {moved:.1f} mm, from {origin})"
            cells.append(cell)
        for key, value in got.items():
            if value is not None:
                counts[key][0] += int(value)
                counts[key][1] += 1
        if all(v is not None for v in got.values()):
            counts["all three"][0] += int(all(got.values()))
            counts["all three"][1] += 1
        rows.append(
            f"| {path.name} | "
            + " | ".join(cells)
            + f" | {mask.sum() * float(np.prod(image.spacing)) / 1000:.0f} |"
        )
    out = [
        f"## c. OpenKBP validation patients ({len(paths)}): landmarks inside the mask",
        "",
        "Landmarks come from the anatomical annotator (not a human): the nose tip, and the "
        "lips' and the chin's most anterior skin points of the mid-sagittal profile, 2 mm "
        "inside the skin. The annotator works on a 2 mm grid; on the stored grid a landmark's "
        "voxel must hold some of the patient and no radiopaque matter (-900 to 600 HU; a "
        "partial-volume skin voxel counts). Where it does not (a radiopaque skin marker, air "
        "between open lips), the landmark moves to the first such voxel behind it, up to one "
        "voxel diagonal (the table says how far); with none there it is off the patient and "
        "not counted.",
        "",
        "| landmark | inside | of | fraction | criterion >= 95% |",
        "|---|---|---|---|---|",
    ]
    for key, (hit, total) in counts.items():
        frac = hit / total if total else float("nan")
        out.append(
            f"| {key} | {hit} | {total} | {frac:.1%} | {'PASS' if frac >= 0.95 else 'FAIL'} |"
        )
    out += [
        "",
        "<details><summary>per patient</summary>",
        "",
        "| patient | nose tip | lips | chin | mask mL |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "</details>",
        "",
    ]
    return out


# --- d. robustness ----------------------------------------------------------------------------


def _crop(
    image: CTImage, keep_top: bool, fraction: float
) -> tuple[np.ndarray, tuple, np.ndarray, float]:
    """The top or bottom ``fraction`` of the axial slices of ``image``: HU, spacing, affine
    (its axis directions; the crop's origin is not updated) and the
    mL of the annotator's face mask of the whole scan that fall inside the crop (what a model
    true to mask-definition.md may mark there: a top crop can hold forehead)."""
    from ctadeface.training.annotate import annotate_face

    hu = image.hu()
    ax = axial_axis(image.affine)
    n = hu.shape[ax]
    superior_is_high = image.affine[2, ax] > 0
    cut = round(n * fraction)
    lo, hi = (n - cut, n) if keep_top == superior_is_high else (0, cut)
    sl = [slice(None)] * 3
    sl[ax] = slice(lo, hi)
    expected = annotate_face(hu, image.affine)[tuple(sl)].sum() * float(np.prod(image.spacing))
    return np.ascontiguousarray(hu[tuple(sl)]), image.spacing, image.affine, expected / 1000.0


def synthetic_abdomen(seed: int = 0) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """An abdomen-like section: body ellipse (fat rim, 40 HU organs), spine, air around; HU,
    spacing (mm) and an RAS affine."""
    rng = np.random.default_rng(seed)
    shape, sp = (256, 256, 60), (1.5, 1.5, 5.0)
    x, y = np.meshgrid(np.arange(shape[0]) * sp[0] - 192, np.arange(shape[1]) * sp[1] - 192)
    x, y = x.T, y.T
    body = (x / 160) ** 2 + (y / 110) ** 2 < 1
    fat = body & ((x / 145) ** 2 + (y / 95) ** 2 >= 1)
    spine = (x / 18) ** 2 + ((y + 70) / 16) ** 2 < 1
    aorta = ((x - 20) / 12) ** 2 + ((y + 40) / 12) ** 2 < 1
    sl = np.where(body, 40.0, -1000.0)
    sl[fat] = -100.0
    sl[spine] = 600.0
    sl[aorta] = 350.0
    hu = np.repeat(sl[:, :, None], shape[2], 2) + rng.normal(0, 10, shape)
    return hu.astype(np.float32), sp, np.diag([*sp, 1.0])


def section_robustness(seg: FaceSegmenter, openkbp: Sequence[Path], heads: Sequence[Path]) -> list:
    errors, volumes, empty = [], [], 0
    t0 = time.perf_counter()
    for path in openkbp:
        try:
            image = load_ct(path)
            hu = image.hu()
            mask = default_mask(seg, hu, image.spacing, image.affine)
            ml = mask.sum() * float(np.prod(image.spacing)) / 1000.0
            volumes.append(ml)
            empty += int(ml == 0)
        except Exception as err:
            errors.append(f"{path.name}: {type(err).__name__}: {err}")
            log.error("%s", traceback.format_exc())
    seconds = time.perf_counter() - t0
    out = [
        f"## d. Robustness: {len(openkbp)} OpenKBP CTs in process",
        "",
        f"- errors: {len(errors)} ({'PASS' if not errors else 'FAIL'})",
        f"- empty masks: {empty}; mask volume mL: median "
        f"{np.median(volumes) if volumes else float('nan'):.0f}, min "
        f"{min(volumes, default=float('nan')):.0f}, max {max(volumes, default=float('nan')):.0f}",
        f"- {seconds / max(len(openkbp), 1):.1f} s per CT (busy shared 2-core machine)",
        *[f"  - {e}" for e in errors],
        "",
        "| crop without a face | voxels | mask voxels | mask mL | annotator on the full scan, mL |",
        "|---|---|---|---|---|",
    ]
    crops: list[tuple[str, np.ndarray, tuple, np.ndarray, float]] = []
    if heads:
        head = load_ct(heads[0])
        crops.append((f"brain only: top 40% of {heads[0].name}", *_crop(head, True, 0.4)))
    if openkbp:
        kbp = load_ct(openkbp[0])
        crops.append((f"neck only: bottom 45% of {openkbp[0].name}", *_crop(kbp, False, 0.45)))
    crops.append(("synthetic abdomen 256x256x60", *synthetic_abdomen(), 0.0))
    for name, hu, spacing, affine, expected in crops:
        try:
            mask = default_mask(seg, hu, spacing, affine)
            ml = mask.sum() * float(np.prod(spacing)) / 1000.0
            out.append(f"| {name} | {hu.size} | {int(mask.sum())} | {ml:.1f} | {expected:.1f} |")
        except Exception as err:
            out.append(f"| {name} | {hu.size} | ERROR {type(err).__name__}: {err} | | |")
    out.append("")
    return out


# --- e. timing --------------------------------------------------------------------------------


def section_timing(seg: FaceSegmenter, threads: int) -> list[str]:
    from ctadeface.training.phantom import PhantomSpec, make_phantom

    spec = PhantomSpec(shape=(512, 512, 300), spacing=(0.45, 0.45, 0.6), fov_center_mm=(0, 10, -20))
    ph = make_phantom(spec)
    hu = ph.hu()
    t0 = time.perf_counter()
    mask = seg.predict(hu, spec.spacing, affine=ph.affine)
    t1 = time.perf_counter()
    pp = postprocess(mask, hu, spec.spacing, POST)
    t2 = time.perf_counter()
    load = os.getloadavg()[0]
    return [
        "## e. Time of a CTA-sized scan (phantom 512x512x300, 0.45x0.45x0.6 mm)",
        "",
        f"- segmentation {t1 - t0:.1f} s, post-processing {t2 - t1:.1f} s, on {threads} CPU "
        f"threads (load average {load:.1f} on this 2-core machine during the run)",
        f"- Dice {dice(mask, ph.face):.3f} (model), {dice(pp, ph.face):.3f} (post-processed)",
        "",
    ]


# --- main -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="open", help="registry name or model folder")
    p.add_argument("--sections", default="abcde")
    p.add_argument("--phantoms", type=int, default=50)
    p.add_argument("--phantom-max-voxels", type=int, default=2_000_000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--openkbp-limit", type=int, default=None)
    p.add_argument(
        "--trained-on",
        action="append",
        default=None,
        help="name parts of the heads used in training (default: mricrogl, slicer)",
    )
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    trained_on = args.trained_on or ["mricrogl", "slicer"]
    with tempfile.TemporaryDirectory() as cache, torch_settings(args.threads):
        spec = resolve_model(args.model, Path(cache))
        seg = FaceSegmenter(spec, device="cpu")
        heads = sorted(Path(p) for p in glob.glob(str(DATA / "heads" / "*.nii.gz")))
        kbp = sorted(Path(p) for p in glob.glob(str(DATA / "openkbp" / "*.nii.gz")))
        validation = [k for k in kbp if k.name.startswith("validation_")]
        out = [
            f"# Open model evaluation: {args.model}",
            "",
            f"Model folder: `{spec.folder}`; checkpoint sha256 "
            f"{', '.join(spec.checkpoint_sha256.values())}.",
            f"Command: `.venv/bin/python -m bench.evaluate_open_model --model {args.model} "
            f"--sections {args.sections}`",
            "",
        ]
        t0 = time.perf_counter()
        if "a" in args.sections:
            out += section_phantoms(seg, args.phantoms, args.phantom_max_voxels)
        if "b" in args.sections and heads:
            out += section_heads(seg, heads, trained_on)
        if "c" in args.sections and validation:
            out += section_landmarks(seg, validation)
        if "d" in args.sections:
            out += section_robustness(seg, kbp[: args.openkbp_limit], heads)
        if "e" in args.sections:
            out += section_timing(seg, args.threads)
        out.append(f"Evaluation took {time.perf_counter() - t0:.0f} s.")
    text = "\n".join(out) + "\n"
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
