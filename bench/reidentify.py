"""Re-identification benchmark: after each defacer, can a face-recognition network still tell
who a head is, does a detector still see a face, and what else did the defacer touch?

Run by hand (not in ``make test``; about an hour on 2 cores)::

    .venv/bin/python -m bench.reidentify [--model open] [--phantoms 20] [--out FILE.md]
    .venv/bin/python -m bench.reidentify --calibration     # the gallery only (a few minutes)

Heads: the real heads of ``../shared/data/heads`` and ``--phantoms`` varied synthetic phantoms
(seeds from 6,000,000; neither these phantoms nor the demo's are in the gallery; the real heads
are, and each is left out of its own test). Defacers, each followed by the same fill (the image's
10th percentile, as CTA-DEFACE):

- ``none``: the original (the identity measures then compare the original at one isosurface
  level with its own render at the next: the control that shows the test can recognise people);
- ``ours face``: the default model (``--model``), post-processed as the app does (face mode);
- ``ours strict``: the same, then the strict mode's cut and seal (``ctadeface.deface.strict``);
- ``annotator``: the anatomical annotator's mask (``ctadeface.training.annotate``, no model),
  with the app's post-processing: the mask of mask-definition.md as well as we can draw it from
  anatomy;
- ``all-soft-tissue``: every voxel at or below the post-processing's bone threshold (600 HU) in
  front of the annotator's posterior limit (the line in front of the ears) and between its lower
  (upper neck) and upper (forehead) limits, in the head's own frame: the most that any mask which
  keeps the bone can remove from the face (it takes the frontal brain too, so its intracranial
  count is not a failure of the mask definition);
- ``box``: a rectangular prism over the lower face, the kind of mask the ichseg CT defacer and
  other box tools use (what the CTA-DEFACE paper compared against). In world (RAS) millimetres,
  from the head's own extent: laterally the central 100 mm, antero-posteriorly from the most
  anterior skin point back 40 mm (plus 10 mm of air in front), vertically from 200 mm to 110 mm
  below the top of the skull (chin to the orbit floor, under the frontal lobes);
- ``cta-deface``: the published CTA-DEFACE weights, when installed (as published: no
  post-processing).

Measures (``ctadeface.verify``, 15 renders per image): per render, is the defaced render nearer
to its own original (dlib's descriptor, at the original's face box) than to every head of the
shipped gallery at that view, and per yaw the same by mean distance over its levels (the app's
identity test); pooled over heads: the rank-1 identification rates (renders, yaws) and the
verification AUC (the chance that a gallery head lies farther from the probe than its own
original); per head: the identity test (rank-1 yaws, chance, one-sided p); MTCNN's highest
probability and dlib's faces after; intracranial voxels changed
(``bench.evaluate_open_model.intracranial``: brain and CSF enclosed by the skull), and on the
phantoms the intracranial and cervical vessel voxels changed (their labels).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench import RESULTS, SHARED_DATA, WORK
from bench.benchmark import machine
from bench.evaluate_open_model import intracranial
from ctadeface.deface import StrictMask, apply_fill, choose_fill, postprocess, strict_mask
from ctadeface.errors import ModelError
from ctadeface.hu import BODY_HU
from ctadeface.io import CTImage, load_ct
from ctadeface.segment.models import resolve_model
from ctadeface.verify.identify import (
    Gallery,
    IdentityResult,
    View,
    rank_views,
    rank_yaws,
    summarise,
)

HEADS = SHARED_DATA / "heads"
#: Seeds of the benchmark's phantoms (not in the gallery, apart from every other set's).
FIRST_PHANTOM = 6_000_000
#: A defacer's mask of an image (and its HU); strict mode's carries its seal.
Masker = Callable[[CTImage, np.ndarray], np.ndarray | StrictMask]


def world_coordinates(image: CTImage, axis: int) -> np.ndarray:
    """World RAS coordinate ``axis`` (0 x, 1 y, 2 z) of every voxel, float32, image shape."""
    i, j, k = (np.arange(n, dtype=np.float32) for n in image.data.shape)
    a = image.affine[axis].astype(np.float32)
    return a[0] * i[:, None, None] + a[1] * j[None, :, None] + a[2] * k[None, None, :] + a[3]


def box_mask(image: CTImage, hu: np.ndarray) -> np.ndarray:
    """The lower-face box described in the module docstring (bool, image shape)."""
    body = hu > BODY_HU
    bone = hu > 300.0
    x, y, z = (world_coordinates(image, a) for a in range(3))
    if not bone.any() or not body.any():
        return np.zeros(hu.shape, bool)
    z_top = float(z[bone].max())
    y_front = float(y[body].max())
    x_mid = float(np.median(x[bone]))
    return (
        (np.abs(x - x_mid) <= 50.0)
        & (y >= y_front - 40.0)
        & (y <= y_front + 10.0)
        & (z >= z_top - 200.0)
        & (z <= z_top - 110.0)
    )


def annotator_mask(image: CTImage, hu: np.ndarray) -> np.ndarray:
    """The anatomical annotator's mask, post-processed as the app does."""
    from ctadeface.training.annotate import annotate_face

    return postprocess(annotate_face(hu, image.affine), hu, image.spacing)


def all_soft_tissue_mask(image: CTImage, hu: np.ndarray) -> np.ndarray:
    """Every non-bone voxel of the face region (see the module docstring); bool, image shape."""
    from ctadeface.deface import PostProcess
    from ctadeface.training.annotate import annotate_face_landmarks

    _, lm = annotate_face_landmarks(hu, image.affine)
    if not lm.found:
        return np.zeros(hu.shape, bool)
    world = [world_coordinates(image, a) - np.float32(lm.origin[a]) for a in range(3)]
    y = sum(np.float32(lm.frame[a, 1]) * world[a] for a in range(3))  # head frame: anterior
    z = sum(np.float32(lm.frame[a, 2]) * world[a] for a in range(3))  # head frame: superior
    return (y > lm.y_post) & (z > lm.z_bottom) & (z < lm.z_top) & (hu <= PostProcess().bone_hu)


def model_masker(spec: str, cache: Path) -> Masker:
    """The app's segmentation (and, for models that ask for it, post-processing)."""
    from ctadeface.segment.segmenter import FaceSegmenter

    model = resolve_model(spec, cache)
    segmenter = FaceSegmenter(model, device="auto")

    def mask(image: CTImage, hu: np.ndarray) -> np.ndarray:
        raw = segmenter.predict(hu, image.spacing, affine=image.affine)
        return postprocess(raw, hu, image.spacing) if model.postprocess else raw

    return mask


def strict_masker(face: Masker) -> Masker:
    """``face``'s mask with the strict mode's cut and seal, as ``--mask strict`` does."""

    def mask(image: CTImage, hu: np.ndarray) -> StrictMask:
        face_mask = face(image, hu)
        assert isinstance(face_mask, np.ndarray)
        return strict_mask(face_mask, hu, image.spacing, image.affine)

    return mask


def no_mask(image: CTImage, hu: np.ndarray) -> np.ndarray:
    return np.zeros(hu.shape, bool)


@dataclass(frozen=True)
class Measure:
    """What one defacer leaves of one head (see the module docstring)."""

    ranks: dict[View, tuple[bool, float]]
    yaw_ranks: dict[float, tuple[bool, float]]
    genuine: dict[View, float]
    impostors: dict[View, np.ndarray]
    identity: IdentityResult
    mtcnn_after: float
    dlib_after: int
    brain_changed: int
    vessels_changed: int | None


class Bench:
    """The verification's parts, loaded once; the gallery without one head at a time."""

    def __init__(self) -> None:
        from ctadeface.verify.detect import FaceDetector
        from ctadeface.verify.identify import Describer, Gallery

        self.detector = FaceDetector()
        self.describer = Describer()
        self.gallery = Gallery.load()

    def originals(self, hu: np.ndarray, affine: np.ndarray) -> tuple[list, list, dict]:
        """Renders of the original, their faces and descriptors."""
        from ctadeface.verify.render import render_skin

        renders = render_skin(hu, affine)
        faces = self.detector.detect(renders, cnn=False)
        return renders, faces, self.describer.describe_all(renders, [f.box for f in faces])

    def measure(
        self,
        original: tuple[list, list, dict],
        dhu: np.ndarray | None,
        affine: np.ndarray,
        gallery: Gallery,
    ) -> tuple[dict[View, np.ndarray], dict[View, np.ndarray], float, int, dict[View, View] | None]:
        """(probes, enrolled, MTCNN after, dlib faces after, enrolled view map) of one image:
        the defaced renders at the original's boxes, or (``dhu`` None) the control."""
        from ctadeface.verify.render import render_skin
        from ctadeface.verify.verdict import _next_level

        renders, faces, enrolled = original
        if dhu is None:
            shift = {v: _next_level(v) for v in enrolled}
            p = max(f.mtcnn_p for f in faces)
            return enrolled, enrolled, p, sum(f.dlib > 0 for f in faces), shift
        after = render_skin(dhu, affine, like=renders)
        found = self.detector.detect(after, cnn=True)
        boxes = [b.box if b.box is not None else a.box for b, a in zip(faces, found, strict=True)]
        probes = self.describer.describe_all(after, boxes)
        return probes, enrolled, max(f.mtcnn_p for f in found), sum(f.dlib > 0 for f in found), None


def distances(
    probes: dict[View, np.ndarray],
    enrolled: dict[View, np.ndarray],
    gallery: Gallery,
    shift: dict[View, View] | None,
) -> tuple[dict[View, float], dict[View, np.ndarray]]:
    """Per tested view: the probe's distance to its own original, and to every gallery head."""
    index = {v: i for i, v in enumerate(gallery.views)}
    genuine, impostors = {}, {}
    for view, probe in probes.items():
        target = shift.get(view, view) if shift else view
        if target not in enrolled or target not in index:
            continue
        others = gallery.descriptors[:, index[target]]
        others = others[~np.isnan(others[:, 0])]
        if len(others):
            genuine[view] = float(np.linalg.norm(probe - enrolled[target]))
            impostors[view] = np.linalg.norm(others - probe, axis=1)
    return genuine, impostors


def auc(genuine: list[float], impostors: list[np.ndarray]) -> float:
    """P(impostor distance > genuine distance), ties half, over the pairs of each view."""
    wins = total = 0.0
    for g, others in zip(genuine, impostors, strict=True):
        wins += float((others > g).sum()) + 0.5 * float((others == g).sum())
        total += len(others)
    return wins / total if total else float("nan")


def heads(phantoms: int, work: Path) -> list[tuple[str, CTImage, Any]]:
    """(name, image, phantom or None) of every head benchmarked; phantoms are written to
    ``work`` and read back, as a user's scan would be."""
    import nibabel as nib

    from ctadeface.training.phantom import draw_spec, make_phantom

    out: list[tuple[str, CTImage, Any]] = []
    for path in sorted(HEADS.glob("*.nii.gz")):
        out.append((f"heads/{path.name}", load_ct(path), None))
    work.mkdir(parents=True, exist_ok=True)
    for seed in range(FIRST_PHANTOM, FIRST_PHANTOM + phantoms):
        phantom = make_phantom(draw_spec(seed, crop=False, max_voxels=3_000_000))
        path = work / f"phantom-{seed}.nii.gz"
        nib.save(phantom.to_nifti(), str(path))
        out.append((f"phantom/{seed}", load_ct(path), phantom))
    return out


def benchmark(model: str, phantoms: int, cache: Path) -> list[str]:
    """The results page (markdown lines)."""
    face = model_masker(model, cache)
    maskers: dict[str, Masker | str] = {
        "none": no_mask,
        "ours face": face,
        "ours strict": strict_masker(face),
        "annotator": annotator_mask,
        "all-soft-tissue": all_soft_tissue_mask,
        "box": box_mask,
    }
    try:
        maskers["cta-deface"] = model_masker("cta-deface", cache)
    except ModelError as e:
        maskers["cta-deface"] = f"not installed ({str(e).split(':')[0]})"
    bench = Bench()
    rows: list[str] = []
    pooled: dict[tuple[str, str], list[Measure]] = {}
    for name, image, phantom in heads(phantoms, cache / "phantoms"):
        hu = image.hu()
        kind = "real" if phantom is None else "phantom"
        brain = intracranial(hu, image.affine, image.spacing)
        vessels = None
        if phantom is not None:
            from ctadeface.training.phantom import Tissue

            vessels = np.isin(phantom.tissue, (Tissue.VESSEL_INTRACRANIAL, Tissue.VESSEL_NECK))
        original = bench.originals(hu, image.affine)
        own = original[2]
        gallery = bench.gallery.without(own)
        gallery = type(gallery)(
            gallery.views,
            tuple(n for n in gallery.names if n != name),
            gallery.descriptors[[n != name for n in gallery.names]],
        )
        fill = choose_fill(image, "p10")
        for defacer, masker in maskers.items():
            if isinstance(masker, str):
                continue
            cut = masker(image, hu)
            mask, seal = (cut.mask, cut.seal) if isinstance(cut, StrictMask) else (cut, None)
            dhu = None
            if defacer != "none":
                defaced = apply_fill(image, mask, fill, seal=seal)
                dhu = replace(image, data=defaced).hu()
            probes, enrolled, p_after, dlib_after, shift = bench.measure(
                original, dhu, image.affine, gallery
            )
            ranks = rank_views(probes, enrolled, gallery, enrolled_view=shift)
            yaw_ranks = rank_yaws(probes, enrolled, gallery, enrolled_view=shift)
            genuine, impostors = distances(probes, enrolled, gallery, shift)
            changed = 0 if dhu is None else int((brain & mask & (dhu != hu)).sum())
            vessel_changed = None
            if vessels is not None:
                vessel_changed = 0 if dhu is None else int((vessels & mask).sum())
            m = Measure(
                ranks,
                yaw_ranks,
                genuine,
                impostors,
                summarise(yaw_ranks, gallery),
                p_after,
                dlib_after,
                changed,
                vessel_changed,
            )
            pooled.setdefault((kind, defacer), []).append(m)
            rows.append(_row(name, defacer, m))
            print(rows[-1], flush=True)
    return _page(model, phantoms, maskers, pooled, rows)


def _row(name: str, defacer: str, m: Measure) -> str:
    i = m.identity
    vessels = "-" if m.vessels_changed is None else str(m.vessels_changed)
    return (
        f"| {name} | {defacer} | {i.rank1_views}/{i.views_tested} | {i.chance:.4f} | {i.p:.2g} | "
        f"{'**yes**' if i.identified else 'no'} | {m.mtcnn_after:.3f} | {m.dlib_after}/15 | "
        f"{m.brain_changed} | {vessels} |"
    )


def _page(
    model: str,
    phantoms: int,
    maskers: dict[str, Masker | str],
    pooled: dict[tuple[str, str], list[Measure]],
    rows: list[str],
) -> list[str]:
    lines = [
        "# Re-identification benchmark",
        "",
        f"Machine: {machine()}. Command: `.venv/bin/python -m bench.reidentify --model {model} "
        f"--phantoms {phantoms}`. Model for `ours`: `{model}`; fill: 10th percentile; 15 renders "
        "per image; the shipped gallery less the head itself.",
        "",
        "## Per defacer (pooled over heads)",
        "",
        "| heads | defacer | rank-1 rate (renders) | chance | rank-1 rate (yaws) | chance "
        "| verification AUC | heads identified "
        "(p < 0.05) | max MTCNN p after | heads with a dlib face after | heads with MTCNN p >= 0.5 "
        "| intracranial voxels changed | vessel voxels changed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (kind, defacer), measures in pooled.items():
        hits = sum(hit for m in measures for hit, _ in m.ranks.values())
        views = sum(len(m.ranks) for m in measures)
        chance = float(np.mean([c for m in measures for _, c in m.ranks.values()] or [0.0]))
        yaw_hits = sum(hit for m in measures for hit, _ in m.yaw_ranks.values())
        yaws = sum(len(m.yaw_ranks) for m in measures)
        yaw_chance = float(np.mean([c for m in measures for _, c in m.yaw_ranks.values()] or [0.0]))
        genuine = [g for m in measures for g in m.genuine.values()]
        impostors = [i for m in measures for i in m.impostors.values()]
        identified = sum(m.identity.identified for m in measures)
        vessels = [m.vessels_changed for m in measures if m.vessels_changed is not None]
        lines.append(
            f"| {kind} ({len(measures)}) | {defacer} | "
            f"{hits / max(views, 1):.3f} ({hits}/{views}) | "
            f"{chance:.4f} | {yaw_hits / max(yaws, 1):.3f} ({yaw_hits}/{yaws}) | "
            f"{yaw_chance:.4f} | {auc(genuine, impostors):.3f} | {identified}/{len(measures)} | "
            f"{max(m.mtcnn_after for m in measures):.3f} | "
            f"{sum(m.dlib_after > 0 for m in measures)}/{len(measures)} | "
            f"{sum(m.mtcnn_after >= 0.5 for m in measures)}/{len(measures)} | "
            f"{sum(m.brain_changed for m in measures)} | {sum(vessels) if vessels else '-'} |"
        )
    missing = [f"`{d}`: {m}" for d, m in maskers.items() if isinstance(m, str)]
    lines += [
        "",
        "`none` = the control: each original at one isosurface level against its own render at "
        "the next level and the gallery there. Rank 1 = the own original is nearer than every "
        "gallery head (a yaw: by mean distance over its levels); identified = the app's test, "
        "one trial a yaw; AUC (renders) = the chance that a gallery head lies farther than the "
        "own original." + (" Not measured: " + "; ".join(missing) + "." if missing else ""),
        "",
        "## Per head",
        "",
        "| head | defacer | rank 1 / yaws | chance | p | identified | MTCNN p after | dlib faces "
        "after | intracranial changed | vessels changed |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    ]
    return lines


def calibration(gallery_path: Path | None = None) -> list[str]:
    """Genuine and impostor distances within the gallery, rank-1 rates of the control, and the
    identity test's power (markdown lines)."""
    from ctadeface.verify.identify import GALLERY, Gallery, upper_tail
    from ctadeface.verify.verdict import _next_level

    gallery = Gallery.load(gallery_path or GALLERY)
    index = {v: i for i, v in enumerate(gallery.views)}
    d = gallery.descriptors
    seen = ~np.isnan(d[:, :, 0])
    genuine, impostor, chances, hits, tested = [], [], [], 0, 0
    for view, v in index.items():
        w = index[_next_level(view)]
        for h in np.flatnonzero(seen[:, v] & seen[:, w]):
            g = float(np.linalg.norm(d[h, v] - d[h, w]))
            others = [o for o in np.flatnonzero(seen[:, w]) if o != h]
            imp = np.linalg.norm(d[others, w] - d[h, v], axis=1)
            genuine.append(g)
            impostor.extend(imp.tolist())
            chances.append(1.0 / (1 + len(imp)))
            tested += 1
            hits += bool(len(imp)) and g < float(imp.min())
    g, i = np.asarray(genuine), np.asarray(impostor)

    def q(x: np.ndarray) -> str:
        return " / ".join(f"{v:.3f}" for v in np.percentile(x, [5, 25, 50, 75, 95]))

    yaw_hits = yaw_tested = 0
    yaw_chances: list[float] = []
    shift = {view: _next_level(view) for view in gallery.views}
    for h in np.flatnonzero(seen.any(axis=1)):
        own = {view: d[h, v] for view, v in index.items() if seen[h, v]}
        rest = np.setdiff1d(np.arange(len(d)), [h])
        sub = Gallery(gallery.views, tuple(gallery.names[i] for i in rest), d[rest])
        for hit, c in rank_yaws(own, own, sub, enrolled_view=shift).values():
            yaw_hits += hit
            yaw_tested += 1
            yaw_chances.append(c)
    yaw_rate = yaw_hits / max(yaw_tested, 1)
    yaw_chance = float(np.mean(yaw_chances)) if yaw_chances else 0.0
    n_heads = int(seen.any(axis=1).sum())
    chance = float(np.mean(chances)) if chances else 0.0
    rate = hits / max(tested, 1)
    lines = [
        "# Identity test: calibration on the shipped gallery",
        "",
        f"Command: `.venv/bin/python -m bench.reidentify --calibration`. Gallery: "
        f"{len(gallery.names)} heads, {n_heads} with a face on at least one view; "
        f"{int(seen.sum())} descriptors of {seen.size} views.",
        "",
        "Pairs: a head's render at one isosurface level against the same yaw at the next level "
        "(genuine: the same head; impostors: every other head there).",
        "",
        "| distances | pairs | 5 / 25 / 50 / 75 / 95 % | under dlib's 0.6 |",
        "|---|---|---|---|",
        f"| genuine | {len(g)} | {q(g)} | {float((g < 0.6).mean()):.1%} |",
        f"| impostor | {len(i)} | {q(i)} | {float((i < 0.6).mean()):.1%} |",
        "",
        f"Rank 1 of the genuine render among all other heads: {hits} of {tested} renders "
        f"({rate:.1%}; chance {chance:.2%}: the mean of 1 / (1 + heads seen at that view)). "
        f"Per yaw (the app's trial: mean distance over the levels, each against the next level): "
        f"{yaw_hits} of {yaw_tested} yaws ({yaw_rate:.1%}; chance {yaw_chance:.2%}).",
        "",
        "Power of the one-sided test at alpha 0.05 for a scan with k tested yaws, each rank 1 "
        f"with this rate ({yaw_rate:.2f}) against chance {yaw_chance:.4f}:",
        "",
        "| k | yaws needed for p < 0.05 | power |",
        "|---|---|---|",
    ]
    for k in range(1, len({yaw for _, yaw in gallery.views}) + 1):
        need = next((h for h in range(k + 1) if upper_tail(h, [yaw_chance] * k) < 0.05), k + 1)
        power = upper_tail(need, [yaw_rate] * k) if need <= k else 0.0
        lines.append(f"| {k} | {need} | {power:.3f} |")
    return lines + false_positives(gallery)


#: Random pairs of different gallery heads the false-positive check draws, and its seed.
NULL_PAIRS = 20_000
NULL_SEED = 0


def false_positives(gallery: Gallery, pairs: int = NULL_PAIRS) -> list[str]:
    """The identity test where the person is *not* there (markdown lines): head A's views as
    the probe, a different head B as the "original", the other heads as the gallery, for random
    pairs. How often is p below alpha, counted per yaw as the app counts (one view a yaw: mean
    distance over the levels both have) and as if every render were a view; and how often does
    a rank-1 render have a rank-1 render at another level of the same yaw."""
    d = gallery.descriptors
    seen = ~np.isnan(d[:, :, 0])
    rng = np.random.default_rng(NULL_SEED)
    p_render, p_yaw = [], []
    same_yaw_pairs = first_hits = both_hits = 0
    for _ in range(pairs):
        a, b = (int(x) for x in rng.choice(len(d), 2, replace=False))
        rest = np.setdiff1d(np.arange(len(d)), [a, b])
        sub = Gallery(gallery.views, tuple(gallery.names[i] for i in rest), d[rest])
        probes = {v: d[a, i] for i, v in enumerate(gallery.views) if seen[a, i]}
        enrolled = {v: d[b, i] for i, v in enumerate(gallery.views) if seen[b, i]}
        ranks = rank_views(probes, enrolled, sub)
        if ranks:
            p_render.append(summarise(ranks, sub).p)
        for v, (hit, _) in ranks.items():
            for w, (other, _) in ranks.items():
                if v < w and v[1] == w[1]:
                    same_yaw_pairs += 1
                    first_hits += hit
                    both_hits += hit and other
        yaw_ranks = rank_yaws(probes, enrolled, sub)
        if yaw_ranks:
            p_yaw.append(summarise(yaw_ranks, sub).p)
    alphas = (0.05, 0.01, 0.002, 0.001)
    r, y = np.asarray(p_render), np.asarray(p_yaw)
    hit_rate = first_hits / max(same_yaw_pairs, 1)
    return [
        "",
        "## False positives: the test where the person is not there",
        "",
        f"{pairs} random pairs of different gallery heads (seed {NULL_SEED}): head A's views "
        "probe, head B stands for the original, the other heads are the gallery. Pairs with a "
        "view tested, and the share of them with p below alpha (a valid test stays at or under "
        "alpha):",
        "",
        "| counted | pairs tested | " + " | ".join(f"p < {a}" for a in alphas) + " |",
        "|---|---|" + "---|" * len(alphas),
        f"| every render a view | {len(r)} | "
        + " | ".join(f"{float((r < a).mean()):.4f}" for a in alphas)
        + " |",
        f"| one view a yaw, mean distance over its levels (the app) | {len(y)} | "
        + " | ".join(f"{float((y < a).mean()):.4f}" for a in alphas)
        + " |",
        "",
        f"Renders of one yaw at two levels, both tested: {same_yaw_pairs} pairs; the first is "
        f"rank 1 in {hit_rate:.2%}, both in {both_hits / max(same_yaw_pairs, 1):.3%} "
        f"(independent views would give {hit_rate**2:.3%}); given the first, the second in "
        f"{both_hits / max(first_hits, 1):.1%}.",
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="open")
    p.add_argument("--phantoms", type=int, default=20)
    p.add_argument("--out", type=Path, default=RESULTS / "reidentify.md")
    p.add_argument("--cache", type=Path, default=WORK / "reidentify")
    p.add_argument(
        "--calibration",
        action="store_true",
        help="only the gallery's distances and the test's power (identity_calibration.md)",
    )
    args = p.parse_args(argv)
    if args.calibration:
        lines = calibration()
        out = args.out.with_name("identity_calibration.md")
    else:
        if not HEADS.is_dir():
            print(f"no heads in {HEADS}", file=sys.stderr)
            return 1
        lines = benchmark(args.model, args.phantoms, args.cache)
        out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
