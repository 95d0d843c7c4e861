"""Which way the array axes run: a model's input orientation and the way to and from it.

A model trained by ``ctadeface.train --orientation`` declares the orientation of the arrays it
was trained on (our ``open`` model: ``RAS``, array axis i runs towards the subject's Right, j
Anterior, k Superior, as nibabel's ``as_closest_canonical`` gives). Scans are brought to it by
axis permutation and flips only (no resampling; the nearest orientation to an oblique affine),
as views, and segmented; the mask is written through the same view of a stored-order array.
Published nnU-Net models declare none and get the stored order, as nnU-Net's NIfTI readers
give it.

An ``Orientation`` holds nibabel's orientation array: for each stored axis, the model axis it
becomes and whether it is flipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from nibabel import orientations

T = TypeVar("T")


def check_codes(codes: str) -> str:
    """``codes`` (e.g. ``RAS``, ``LPS``) upper-cased, or ValueError when it does not name one
    direction along each of the three world axes."""
    upper = codes.upper()
    try:
        ornt = orientations.axcodes2ornt(tuple(upper))
    except ValueError as err:
        raise ValueError(f"orientation {codes!r}: {err}") from None
    if len(upper) != 3 or np.isnan(ornt).any() or sorted(ornt[:, 0]) != [0, 1, 2]:
        raise ValueError(f"orientation {codes!r}: expected one of R/L, A/P, S/I each, e.g. RAS")
    return upper


@dataclass(frozen=True)
class Orientation:
    """How to turn a stored array into one whose axes run along ``codes``.

    ``ornt``: nibabel orientation array (3, 2): row i = (model axis of stored axis i, -1 when
    stored axis i runs against that model axis else 1).
    """

    codes: str
    ornt: np.ndarray

    @classmethod
    def of(cls, affine: np.ndarray, codes: str) -> Orientation:
        """The way from the stored array of ``affine`` (voxel -> world RAS+ mm) to ``codes``."""
        codes = check_codes(codes)
        stored = orientations.io_orientation(np.asarray(affine, float))
        ornt = orientations.ornt_transform(stored, orientations.axcodes2ornt(tuple(codes)))
        return cls(codes, ornt)

    @property
    def identity(self) -> bool:
        """True when the stored array already runs along ``codes``."""
        return bool(np.array_equal(self.ornt, [[0, 1], [1, 1], [2, 1]]))

    def permute(self, values: Sequence[T]) -> tuple[T, T, T]:
        """Per-axis ``values`` (stored axes: shape, spacing in mm) listed per model axis."""
        out = list(values)
        for axis, (target, _) in enumerate(self.ornt):
            out[int(target)] = values[axis]
        return (out[0], out[1], out[2])

    def spacing(self, spacing: Sequence[float]) -> tuple[float, float, float]:
        """mm per model axis, from mm per stored axis."""
        return self.permute([float(s) for s in spacing])

    def forward(self, array: np.ndarray) -> np.ndarray:
        """``array`` (stored order) in the model's orientation: a view of it (axes permuted,
        reversed where they flip; no copy of the volume), or ``array`` itself."""
        if self.identity:
            return array
        return orientations.apply_orientation(array, self.ornt)
