"""A synthetic arch-to-vertex CTA: the phantom head and neck above a trunk (lower neck widening
into the shoulders, upper chest with lungs, spine and a contrast-filled aortic arch), int16,
512x512x800 at 0.45x0.45x0.6 mm (480 mm: the face is a fifth of it).

The head is ``make_phantom`` (400 slices, 240 mm, uncropped); the trunk (400 slices) is drawn
slice by slice, joined to the neck where the head's body ends. Made by ``bench.benchmark``
(input ``cta-arch-to-vertex``) and cached in the bench work folder::

    .venv/bin/python -m bench.arch_to_vertex OUT.nii.gz
"""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (512, 512, 800)
SPACING = (0.45, 0.45, 0.6)
HEAD_SLICES = 400


def _trunk(n: int, plane: tuple[int, int], spacing: tuple[float, float], centre: np.ndarray):
    """HU float32 (i, j, n) from the neck (first slice) down: the body's half-axes grow from the
    neck's (60 x 55 mm) to the shoulders' (200 x 120 mm, wider than the field of view) over the
    first 90 mm; lungs from 60 mm down; spine; an aortic arch from 120 mm down."""
    rng = np.random.default_rng(3)
    x = (np.arange(plane[0]) * spacing[0] - centre[0])[:, None]
    y = (np.arange(plane[1]) * spacing[1] - centre[1])[None, :]
    out = np.empty((plane[0], plane[1], n), np.float32)
    for k in range(n):
        depth = k * SPACING[2]
        t = min(depth / 90.0, 1.0)
        ax, ay = 60 + t * 140, 55 + t * 65
        section = np.where((x / ax) ** 2 + (y / ay) ** 2 < 1, 40.0, -1000.0)
        fat = (x / (ax - 8)) ** 2 + (y / (ay - 8)) ** 2 >= 1
        section[(section > 0) & fat] = -100.0
        if depth > 60:
            for side in (-1, 1):
                lung = ((x - side * 0.42 * ax) / (0.3 * ax)) ** 2 + (y / (0.6 * ay)) ** 2
                section[lung < 1] = -850.0
        section[(x / 14) ** 2 + ((y + 0.7 * ay) / 13) ** 2 < 1] = 700.0  # spine (posterior)
        if depth > 120:
            section[((x - 15) / 13) ** 2 + ((y - 0.1 * ay) / 13) ** 2 < 1] = 350.0  # aorta
        out[:, :, k] = section
    out += rng.normal(0, 8, out.shape).astype(np.float32)
    return out


def arch_to_vertex(seed: int = 7) -> nib.Nifti1Image:
    """The phantom (module docstring) as a NIfTI image, int16, slope 1, intercept 0."""
    from ctadeface.training.phantom import make_phantom

    head = make_phantom(
        seed,
        shape=(SHAPE[0], SHAPE[1], HEAD_SLICES),
        spacing=SPACING,
        storages=("int16",),
        crop=False,
        random_order=False,
    )
    hu = head.hu()
    feet = -1 if head.affine[2, 2] > 0 else 1  # which way along k the body goes down
    bottom = hu[:, :, 0] if feet < 0 else hu[:, :, -1]
    body = np.argwhere(bottom > -500)
    centre = body.mean(axis=0) * np.array(SPACING[:2]) if len(body) else np.array([115.0, 115.0])
    trunk = _trunk(SHAPE[2] - HEAD_SLICES, SHAPE[:2], SPACING[:2], centre)
    if feet > 0:
        full = np.concatenate([hu, trunk], axis=2)
        affine = head.affine
    else:
        full = np.concatenate([trunk[:, :, ::-1], hu], axis=2)
        affine = head.affine.copy()
        affine[:3, 3] -= affine[:3, 2] * trunk.shape[2]
    data = np.clip(np.rint(full), -1024, 3071).astype(np.int16)
    img = nib.Nifti1Image(data, affine)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_slope_inter(1.0, 0.0)
    return img


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__)
        return 64
    nib.save(arch_to_vertex(), Path(args[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
