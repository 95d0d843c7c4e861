"""Tests of ctadeface.segment.orientation: the turn to a model's orientation is nibabel's closest
canonical orientation, its spacing follows the axes, and a mask written through the turned view
of a stored array is the stored array, in its memory order."""

from __future__ import annotations

import itertools

import nibabel as nib
import numpy as np
import pytest

from ctadeface.segment.orientation import Orientation, check_codes


def affine_of(perm: tuple[int, ...], signs: tuple[int, ...], spacing=(1.0, 2.0, 3.0)) -> np.ndarray:
    """Stored axis i runs along world axis perm[i], in direction signs[i], spacing[i] mm."""
    affine = np.eye(4)
    affine[:3, :3] = 0.0
    for axis, (world, sign) in enumerate(zip(perm, signs, strict=True)):
        affine[world, axis] = sign * spacing[axis]
    affine[:3, 3] = [10.0, -20.0, 30.0]
    return affine


ALL_48 = [
    (perm, signs)
    for perm in itertools.permutations(range(3))
    for signs in itertools.product((1, -1), repeat=3)
]


@pytest.mark.parametrize(("perm", "signs"), ALL_48)
def test_ras_is_nibabels_closest_canonical_and_turns_back(perm, signs) -> None:
    array = np.random.default_rng(0).random((3, 4, 5))
    affine = affine_of(perm, signs)
    turn = Orientation.of(affine, "RAS")
    canonical = nib.as_closest_canonical(nib.Nifti1Image(array, affine))
    forward = turn.forward(array)
    assert np.array_equal(forward, np.asarray(canonical.dataobj))
    assert turn.spacing((1.0, 2.0, 3.0)) == tuple(float(z) for z in canonical.header.get_zooms())
    assert turn.permute(array.shape) == forward.shape
    back = np.zeros_like(array)
    turn.forward(back)[...] = forward  # written through the view: the stored array again
    assert np.array_equal(back, array)
    assert turn.identity == (perm == (0, 1, 2) and signs == (1, 1, 1))


def test_other_codes_and_oblique_affines_take_the_nearest_axes() -> None:
    array = np.arange(24).reshape(2, 3, 4)
    lps = Orientation.of(np.diag([-1.0, -1.0, 1.0, 1.0]), "LPS")
    assert lps.identity and lps.forward(array) is array
    angle = np.deg2rad(20.0)  # 20 degrees about S: still closest to RAS
    tilted = np.eye(4)
    tilted[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    assert Orientation.of(tilted, "RAS").identity


def test_forward_is_a_view_that_writes_in_the_stored_memory_order() -> None:
    stored = np.asfortranarray(np.random.default_rng(1).random((5, 6, 7)) > 0.5)
    turn = Orientation.of(affine_of((2, 0, 1), (-1, 1, -1)), "RAS")
    forward = turn.forward(stored)
    assert np.shares_memory(forward, stored)  # no copy of the volume
    assert any(s < 0 for s in forward.strides)  # reversed axes run backwards
    mask = np.zeros(stored.shape, dtype=bool, order="F")
    turn.forward(mask)[...] = np.array(forward)
    assert mask.flags.f_contiguous and np.array_equal(mask, stored)


@pytest.mark.parametrize("bad", ["RAR", "XYZ", "RA", "RASR", ""])
def test_bad_codes_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="orientation"):
        check_codes(bad)
    assert check_codes("las") == "LAS"
