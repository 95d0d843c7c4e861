"""Compare defacers on the real heads of ../shared/data: face probability and brain touched.

Run by hand (not in ``make test``)::

    .venv/bin/python -m bench.compare_defacers [--model open] [--out bench/results/compare.md]

Defacers, each followed by the same fill (the image's 10th percentile, as CTA-DEFACE):

- ``ours``: the default model (``--model``, post-processed as the app does by default);
- ``box``: a rectangular prism over the lower face, the kind of mask the ichseg CT defacer and
  other box tools use (what the CTA-DEFACE paper compared against). In world (RAS) millimetres,
  from the head's own extent: laterally the central 100 mm, antero-posteriorly from the most
  anterior skin point back 40 mm (plus 10 mm of air in front), vertically from 200 mm to 110 mm
  below the top of the skull (chin to the orbit floor, under the frontal lobes);
- ``cta-deface``: the published CTA-DEFACE weights, when installed (as published: no
  post-processing);
- ``annotator``: the anatomical annotator's mask (``ctadeface.training.annotate``, no model),
  with the app's post-processing: the mask of mask-definition.md as well as we can draw it from
  anatomy;
- ``all-soft-tissue``: every voxel at or below the post-processing's bone threshold (600 HU) in
  front of the annotator's posterior limit (the line in front of the ears) and between its lower
  (upper neck) and upper (forehead) limits, in the head's own frame: the most that any mask which
  keeps the bone can remove from the face (it takes the frontal brain too, so its intracranial
  count is not a failure of the mask definition). What MTCNN finds after it is the bare facial
  skeleton.

For each head and defacer: MTCNN's highest face probability over the 15 skin renders before and
after (``ctadeface.verify``), the number of renders with a detection (p >= 0.7) after, and the
number of intracranial voxels changed (``bench.evaluate_open_model.intracranial``: brain and CSF
enclosed by the skull).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench import RESULTS, SHARED_DATA, WORK
from bench.evaluate_open_model import intracranial
from ctadeface.deface import apply_fill, choose_fill, postprocess
from ctadeface.errors import ModelError
from ctadeface.hu import BODY_HU
from ctadeface.io import CTImage, load_ct
from ctadeface.segment.models import resolve_model

HEADS = SHARED_DATA / "heads"
Masker = Callable[[CTImage, np.ndarray], np.ndarray]


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="open")
    p.add_argument("--out", type=Path, default=RESULTS / "compare.md")
    p.add_argument("--cache", type=Path, default=WORK / "compare")
    args = p.parse_args(argv)

    from ctadeface.verify.detect import FaceDetector
    from ctadeface.verify.verdict import verify

    maskers: dict[str, Masker | str] = {"ours": model_masker(args.model, args.cache)}
    maskers["box"] = box_mask
    maskers["annotator"] = annotator_mask
    maskers["all-soft-tissue"] = all_soft_tissue_mask
    try:
        maskers["cta-deface"] = model_masker("cta-deface", args.cache)
    except ModelError as e:
        maskers["cta-deface"] = f"not installed ({str(e)[:60]}...)"
    detector = FaceDetector()
    lines = [
        f"Model for `ours`: `{args.model}`. Fill: 10th percentile. 15 renders per image.",
        "",
        "| head | defacer | p before | p after | renders with a face after | "
        "intracranial voxels changed |",
        "|---|---|---|---|---|---|",
    ]
    heads = sorted(HEADS.glob("*.nii.gz"))
    if not heads:
        print(f"no heads in {HEADS}", file=sys.stderr)
        return 1
    for path in heads:
        image = load_ct(path)
        hu = image.hu()
        brain = intracranial(hu, image.affine, image.spacing)
        fill = choose_fill(image, "p10")
        for name, masker in maskers.items():
            if isinstance(masker, str):
                lines.append(f"| {path.name} | {name} | {masker} | | | |")
                continue
            mask = masker(image, hu)
            defaced = apply_fill(image, mask, fill)
            dhu = (defaced.astype(np.float64) * image.slope + image.inter).astype(np.float32)
            result, _, _ = verify(hu, dhu, image.affine, detector)
            changed = int((brain & mask & (dhu != hu)).sum())
            lines.append(
                f"| {path.name} | {name} | {result.face_p_before:.3f} | "
                f"{result.face_p_after:.3f} | {result.detections_after}/15 | {changed} |"
            )
            print(lines[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
