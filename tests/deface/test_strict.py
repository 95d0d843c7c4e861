"""ctadeface.deface.strict: the strict mask removes the front of the facial skeleton, never what
the skull encloses nor the neck's arteries, whatever the voxel order; its seal makes the cut
front one smooth surface."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel import orientations
from scipy import ndimage

from ctadeface.deface.fill import apply_fill, choose_fill
from ctadeface.deface.strict import StrictMask, StrictParams, strict_mask
from ctadeface.io import CTImage
from ctadeface.training.phantom import Phantom, PhantomSpec, Tissue, draw_spec, make_phantom

NEVER = (Tissue.BRAIN, Tissue.CSF, Tissue.VESSEL_INTRACRANIAL, Tissue.VESSEL_NECK)
SPEC = PhantomSpec(shape=(80, 88, 90), spacing=(2.5, 2.5, 2.5))


def _cut(p: Phantom, params: StrictParams | None = None) -> StrictMask:
    return strict_mask(p.face, p.hu(), p.spec.spacing, p.affine, params or StrictParams())


def _strict(p: Phantom, params: StrictParams | None = None) -> np.ndarray:
    return _cut(p, params).mask


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
    cut = _cut(phantom)
    np.testing.assert_array_equal(orientations.apply_orientation(turned.mask, inverse), cut.mask)
    np.testing.assert_array_equal(
        orientations.apply_orientation(turned.seal.voxels, inverse), cut.seal.voxels
    )


def test_an_empty_mask_stays_empty(phantom: Phantom) -> None:
    empty = np.zeros_like(phantom.face)
    cut = strict_mask(empty, phantom.hu(), phantom.spec.spacing, phantom.affine)
    assert not cut.mask.any() and not cut.seal.voxels.any()


def test_the_seal_is_a_layer_of_the_mask_at_its_cut(phantom: Phantom) -> None:
    cut = _cut(phantom)
    seal = cut.seal.voxels
    assert seal.any() and not (seal & ~cut.mask).any()
    assert cut.seal.value_hu == StrictParams().seal_hu
    assert not (seal & np.isin(phantom.tissue, NEVER)).any()
    # a layer, not a block: a few voxels (seal_mm = 5 mm = 2 voxels of 2.5 mm) deep per column
    anterior = 1  # the phantom is stored in RAS order
    assert seal.sum(axis=anterior).max() <= 3
    thin = _cut(phantom, StrictParams(seal_mm=0.0)).seal.voxels
    assert thin.sum() < seal.sum()


def _front_depth(hu: np.ndarray, level: float) -> np.ndarray:
    """Per (x, z) column of a RAS-stored volume: index of the first voxel above ``level`` HU
    seen from the front (the anterior end of axis 1); -1 where none."""
    above = hu[:, ::-1, :] > level
    return np.where(above.any(axis=1), hu.shape[1] - 1 - np.argmax(above, axis=1), -1)


def test_the_sealed_front_renders_without_pits(phantom: Phantom) -> None:
    """The skin isosurface over the cut, seen from the front: sealed, no pit deeper than a voxel
    (a grey closing over 7 columns, 17.5 mm, fills what a pit is); with air alone the opened
    nasal cavity and orbits leave pits of several voxels."""
    cut = _cut(phantom)
    image = CTImage(
        path=Path("phantom.nii.gz"),
        data=phantom.hu().astype(np.int16),
        affine=phantom.affine,
        header=nib.Nifti1Header(),
        slope=1.0,
        inter=0.0,
        spacing=phantom.spec.spacing,
    )
    fill = choose_fill(image, "air")
    sealed = apply_fill(image, cut.mask, fill, seal=cut.seal).astype(np.float32)
    open_cut = apply_fill(image, cut.mask, fill).astype(np.float32)
    # columns inside the seal's footprint, away from its rim
    footprint = ndimage.binary_erosion(cut.seal.voxels.any(axis=1), iterations=3)
    assert footprint.sum() > 50
    for level in (-500.0, -300.0, -100.0):
        pits = {}
        for name, volume in (("sealed", sealed), ("open", open_cut)):
            depth = _front_depth(volume, level).astype(float)
            pits[name] = float((ndimage.grey_closing(depth, size=(7, 7)) - depth)[footprint].max())
        assert pits["sealed"] <= 1, (level, pits)
        assert pits["open"] >= 4, (level, pits)


def test_a_thick_slice_phantom_keeps_its_brain_and_csf(tmp_path: Path) -> None:
    """A tilted head in 5 mm slices (re-identification benchmark phantom 6,000,019), masked by
    the shipped model as the app does: the frontal lobe's CSF lies between columns and at the
    edge of what the intracranial test finds; the clearance, in 3D, keeps the cut off it."""
    from ctadeface.deface.postprocess import postprocess
    from ctadeface.io import load_ct
    from ctadeface.segment.models import resolve_model
    from ctadeface.segment.segmenter import FaceSegmenter

    p = make_phantom(draw_spec(6_000_019, crop=False, max_voxels=3_000_000))
    nib.save(p.to_nifti(), str(tmp_path / "head.nii.gz"))
    image = load_ct(tmp_path / "head.nii.gz")
    hu = image.hu()
    segmenter = FaceSegmenter(resolve_model("open", tmp_path / "cache"), device="cpu")
    face = postprocess(segmenter.predict(hu, image.spacing, affine=image.affine), hu, image.spacing)
    cut = strict_mask(face, hu, image.spacing, image.affine)
    assert (cut.mask & ~face).sum() > 0
    hit = cut.mask & np.isin(p.tissue, NEVER)
    assert not hit.any(), np.unique(p.tissue[hit], return_counts=True)
