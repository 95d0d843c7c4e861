"""ctadeface.deface.strict: the strict mask removes the front of the facial skeleton, never what
the skull encloses nor the neck's arteries, whatever the voxel order."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from nibabel import orientations

from ctadeface.deface.strict import StrictParams, strict_mask
from ctadeface.training.phantom import Phantom, PhantomSpec, Tissue, make_phantom

NEVER = (Tissue.BRAIN, Tissue.CSF, Tissue.VESSEL_INTRACRANIAL, Tissue.VESSEL_NECK)
SPEC = PhantomSpec(shape=(80, 88, 90), spacing=(2.5, 2.5, 2.5))


def _strict(p: Phantom, params: StrictParams | None = None) -> np.ndarray:
    return strict_mask(p.face, p.hu(), p.spec.spacing, p.affine, params or StrictParams())


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return make_phantom(SPEC)


def test_it_adds_the_front_of_the_facial_skeleton_to_the_face_mask(phantom: Phantom) -> None:
    strict = _strict(phantom)
    assert (strict & phantom.face).sum() == phantom.face.sum()
    added = strict & ~phantom.face
    bone = np.isin(phantom.tissue, (Tissue.BONE, Tissue.MARROW, Tissue.TEETH))
    assert (added & bone).sum() > 0.05 * (phantom.face & ~bone).sum()  # a real cut, not a rim
    kept_bone = bone & ~strict
    assert kept_bone.sum() > 0.8 * bone.sum()  # the skull stays: only the face's front goes


def test_never_what_the_skull_encloses_nor_the_neck_arteries(phantom: Phantom) -> None:
    strict = _strict(phantom)
    for tissue in NEVER:
        assert not (strict & (phantom.tissue == tissue)).any(), tissue.name


def test_deeper_cuts_remove_more_and_stay_out_of_the_skull(phantom: Phantom) -> None:
    shallow = _strict(phantom, StrictParams(depth_mm=8.0))
    deep = _strict(phantom, StrictParams(depth_mm=30.0))
    assert shallow.sum() < deep.sum()
    assert not (deep & np.isin(phantom.tissue, NEVER)).any()


def test_the_voxel_order_does_not_change_the_cut(phantom: Phantom) -> None:
    """The same head stored in another axis order and direction (PIL-like) gets the same cut."""
    ornt = np.array([[2, -1], [0, 1], [1, -1]])  # stored axis 0 -> model axis 2, flipped, ...
    hu = phantom.hu()
    turned_hu = nib.Nifti1Image(hu, phantom.affine).as_reoriented(ornt)
    turned_face = orientations.apply_orientation(phantom.face, ornt)
    spacing = tuple(float(z) for z in turned_hu.header.get_zooms()[:3])
    turned = strict_mask(
        turned_face, np.asarray(turned_hu.dataobj), spacing, turned_hu.affine, StrictParams()
    )
    inverse = orientations.ornt_transform([[0, 1], [1, 1], [2, 1]], ornt)
    back = orientations.apply_orientation(turned, inverse)
    np.testing.assert_array_equal(back, _strict(phantom))


def test_an_empty_mask_stays_empty(phantom: Phantom) -> None:
    empty = np.zeros_like(phantom.face)
    assert not strict_mask(empty, phantom.hu(), phantom.spec.spacing, phantom.affine).any()
