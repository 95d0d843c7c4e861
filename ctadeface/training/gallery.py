"""Build the identity test's gallery: face descriptors of other people's heads, no images.

``python -m ctadeface.training.gallery [--shared DIR] [--phantoms N] [--out PATH]`` renders every
head CT of ``DIR/heads`` and ``DIR/openkbp`` (the shared real CTs) and N synthetic phantoms
(:mod:`ctadeface.training.phantom`, seeds from :data:`FIRST_SEED`) exactly as verification
renders a scan (:func:`ctadeface.verify.render.render_skin`), finds each view's face box as
verification finds the original's (dlib HOG, else MTCNN), and stores dlib's descriptor there
(:class:`ctadeface.verify.identify.Gallery`; NaN where no face is found). The default output is
the gallery the package ships, ``ctadeface/data/gallery/gallery.npz``.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ctadeface.errors import CTADefaceError
from ctadeface.io import load_ct
from ctadeface.verify.detect import FaceDetector
from ctadeface.verify.identify import GALLERY, Describer, Gallery
from ctadeface.verify.render import THRESHOLDS_HU, YAWS_DEG, render_skin

log = logging.getLogger(__name__)

#: Seeds of the gallery's phantoms: apart from the demo's (0, 1), the training recipe's
#: (SEED*1000+i), its held-out checks (10**6+) and the evaluation's (3,000,000+).
FIRST_SEED = 5_000_000
#: Descriptor length of dlib's face-recognition network.
DESCRIPTOR_SIZE = 128


def views() -> tuple[tuple[float, float], ...]:
    """The views of verification's renders, thresholds outer, yaws inner."""
    return tuple((float(t), float(y)) for t in THRESHOLDS_HU for y in YAWS_DEG)


def describe_head(
    hu: np.ndarray, affine: np.ndarray, detector: FaceDetector, describer: Describer
) -> np.ndarray:
    """(views, 128) float32 descriptors of one head's renders, NaN where no face is found."""
    renders = render_skin(hu, affine)
    faces = detector.detect(renders, cnn=False)
    found = describer.describe_all(renders, [f.box for f in faces])
    out = np.full((len(renders), DESCRIPTOR_SIZE), np.nan, np.float32)
    for v, view in enumerate(views()):
        if view in found:
            out[v] = found[view]
    return out


def heads(
    shared: Path, phantoms: int, first_seed: int
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(name, HU, affine) of every head of the gallery."""
    from ctadeface.training.phantom import draw_spec, make_phantom

    files = sorted((shared / "heads").glob("*.nii.gz")) + sorted(
        (shared / "openkbp").glob("*.nii.gz")
    )
    for path in files:
        try:
            image = load_ct(path)
        except CTADefaceError as err:
            log.warning("%s", err)
            continue
        yield f"{path.parent.name}/{path.name}", image.hu(), image.affine
    for seed in range(first_seed, first_seed + phantoms):
        spec = draw_spec(seed, crop=False, max_voxels=3_000_000, shell_prob=0.0, sheet_prob=0.0)
        phantom = make_phantom(spec)
        yield f"phantom/{seed}", phantom.hu(), phantom.affine


def build(shared: Path, phantoms: int, first_seed: int = FIRST_SEED) -> Gallery:
    """The gallery of the shared heads and ``phantoms`` phantoms."""
    detector, describer = FaceDetector(cnn_workers=1), Describer()  # no CNN: no workers
    names, rows = [], []
    for name, hu, affine in heads(shared, phantoms, first_seed):
        t0 = time.perf_counter()
        row = describe_head(hu, affine, detector, describer)
        names.append(name)
        rows.append(row)
        seen = int((~np.isnan(row[:, 0])).sum())
        log.info(
            "%s: a face on %d of %d views (%.1f s)", name, seen, len(row), time.perf_counter() - t0
        )
    descriptors = (
        np.stack(rows) if rows else np.zeros((0, len(views()), DESCRIPTOR_SIZE), np.float32)
    )
    return Gallery(views(), tuple(names), descriptors)


def main(argv: Sequence[str] | None = None) -> int:
    """Build the gallery and write it (``--out``)."""
    here = Path(__file__).resolve().parents[2]
    p = argparse.ArgumentParser(prog="python -m ctadeface.training.gallery", description=__doc__)
    p.add_argument("--shared", type=Path, default=here.parent / "shared" / "data")
    p.add_argument("--phantoms", type=int, default=30)
    p.add_argument("--first-seed", type=int, default=FIRST_SEED)
    p.add_argument("--out", type=Path, default=GALLERY)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    gallery = build(args.shared, args.phantoms, args.first_seed)
    gallery.save(args.out)
    log.info("%d heads written to %s", len(gallery.names), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
