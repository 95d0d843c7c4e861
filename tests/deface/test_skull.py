"""Tests of ctadeface.deface.skull: the intracranial region a face mask must never reach."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from ctadeface.deface.skull import intracranial
from ctadeface.training.phantom import Tissue, make_phantom


def _head(shape=(60, 64, 56), spacing=(2.0, 2.0, 2.0), open_front: bool = False):
    """A skull (bone shell, 1000 HU) around a brain (35 HU), soft tissue (40 HU) in front of it
    as a 'face', in air (-1000 HU). Axes (i, j, k), j = anterior. With ``open_front`` the shell
    has a wide hole where the face is, so nothing is enclosed there."""
    idx = np.indices(shape, dtype=float)
    centre = np.array(shape, float)[:, None, None, None] / 2
    r = np.sqrt((((idx - centre) * np.array(spacing)[:, None, None, None]) ** 2).sum(0))
    hu = np.full(shape, -1000.0, np.float32)
    hu[r < 46] = 40.0  # scalp and face
    hu[r < 40] = 1000.0  # skull, 7 mm
    hu[r < 33] = 35.0  # brain
    brain = r < 33
    face = (r >= 40) & (r < 46) & (idx[1] > centre[1, 0, 0, 0] + 8)
    if open_front:
        hole = (idx[1] > centre[1, 0, 0, 0] + 10) & (r < 40) & (r >= 33)
        hu[hole] = 40.0
    return hu, brain, face


def _inside(hu: np.ndarray, spacing) -> np.ndarray:
    found = intracranial(hu, spacing)
    assert found is not None
    return found.voxels(tuple(slice(0, n) for n in hu.shape))


def test_brain_inside_face_outside() -> None:
    hu, brain, face = _head()
    inside = _inside(hu, (2.0, 2.0, 2.0))
    assert inside[brain].mean() > 0.99
    assert not inside[face].any()


def test_any_voxel_order_and_anisotropic_voxels() -> None:
    hu, brain, face = _head(shape=(60, 64, 28), spacing=(2.0, 2.0, 4.0))
    for order in [(0, 1, 2), (2, 0, 1), (1, 2, 0)]:
        spacing = tuple((2.0, 2.0, 4.0)[a] for a in order)
        inside = _inside(hu.transpose(order), spacing)
        assert inside[brain.transpose(order)].mean() > 0.99, order
        assert not inside[face.transpose(order)].any(), order


def test_nothing_enclosed_without_a_closed_skull() -> None:
    hu = np.full((40, 40, 40), 30.0, np.float32)
    assert intracranial(hu, (2.0, 2.0, 2.0)) is None  # no bone at all
    hu[:, :, :3] = 1000.0  # a bone plate under soft tissue: encloses nothing
    assert intracranial(hu, (2.0, 2.0, 2.0)) is None


def test_small_enclosed_spaces_are_not_brain() -> None:
    """A globe-sized ball of soft tissue in a bone ring (about 7 mL) is below ``min_ml``."""
    hu, _, _ = _head(shape=(24, 24, 24), spacing=(1.0, 1.0, 1.0))
    assert intracranial(hu, (1.0, 1.0, 1.0)) is None


@pytest.mark.parametrize("voxel_mm", [2.0, 0.7])
def test_clear_equals_voxelwise_test(voxel_mm: float) -> None:
    """``clear`` (cells first, then voxels) does what the voxel-by-voxel test says, for boxes
    that do and do not start on a cell's border."""
    n = round(2.0 / voxel_mm)
    shape = (60 * n, 64 * n, 56 * n)
    hu, brain, face = _head(shape, (voxel_mm,) * 3)
    found = intracranial(hu, (voxel_mm,) * 3)
    assert found is not None
    assert found.steps == (int(2.0 / voxel_mm),) * 3
    rng = np.random.default_rng(0)
    full = tuple(slice(0, s) for s in shape)
    for box in [
        full,
        (slice(7 * n + 1, 51 * n), slice(30 * n, 64 * n), slice(3 * n + 1, 40 * n - 1)),
        (slice(0, 5), slice(0, 5), slice(0, 5)),
    ]:
        shape = tuple(b.stop - b.start for b in box)
        mask = rng.random(shape) < 0.3
        inside = found.voxels(box)
        expected, expected_count = mask & ~inside, int((mask & inside).sum())
        assert found.clear(mask, box) == expected_count
        assert np.array_equal(mask, expected)
    mask = face.copy()
    assert found.clear(mask, full) == 0
    assert np.array_equal(mask, face)
    mask = brain | face
    assert found.clear(mask, full) >= 0.999 * brain.sum()  # the brain goes, the face stays
    assert np.array_equal(mask & face, face)


@pytest.mark.parametrize("seed", [3, 11])
def test_phantom_brain_is_inside_and_face_is_not(seed: int) -> None:
    phantom = make_phantom(seed, max_voxels=400_000)
    spacing = tuple(float(s) for s in phantom.spec.spacing)
    inside = _inside(phantom.hu(), spacing)
    brain = np.isin(phantom.tissue, [Tissue.BRAIN, Tissue.CSF])
    assert inside[brain].mean() > 0.97
    assert not (inside & phantom.face).any()


@pytest.mark.parametrize("spacing", [(2.0, 2.0, 2.0), (1.0, 1.0, 5.0)])
def test_grown_reaches_mm_and_at_least_a_cell_along_each_axis(spacing) -> None:
    shape = tuple(round(120 / s) for s in spacing)
    hu, _, _ = _head(shape=shape, spacing=spacing)
    found = intracranial(hu, spacing)
    assert found is not None
    full = tuple(slice(0, n) for n in hu.shape)
    inside = found.voxels(full)
    grown = found.grown(6.0, spacing).voxels(full)
    assert (grown & inside).sum() == inside.sum() and grown.sum() > inside.sum()
    distance = ndimage.distance_transform_edt(~inside, sampling=spacing)
    cell = float(np.linalg.norm([s * max(1, int(2.0 / s + 1e-9)) for s in spacing]))
    assert grown[distance <= 6.0 - cell].all()  # everything near
    assert not grown[distance > 6.0 + cell].any()  # and not much more
    # along the coarsest axis a grown region gains at least one cell beyond the inside
    axis = int(np.argmax(spacing))
    assert (grown.sum(axis=axis) >= inside.sum(axis=axis)).all()
    assert (
        grown.any(axis=tuple(a for a in range(3) if a != axis)).sum()
        > inside.any(axis=tuple(a for a in range(3) if a != axis)).sum()
    )
