"""Tests of ctadeface.training.phantom: synthetic CTA heads and their exact face masks (small
volumes)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ctadeface.errors import UsageError
from ctadeface.training.phantom import (
    MASKABLE,
    PHASES,
    STORAGE,
    Phantom,
    PhantomSpec,
    Shell,
    Streak,
    Tissue,
    draw_spec,
    make_phantom,
)

T = Tissue
NEVER_IN_MASK = sorted(set(Tissue) - MASKABLE)
SMALL = {"shape": (56, 56, 56), "spacing": (4.0, 4.0, 4.0)}
SEEDS = (0, 1, 2, 3, 4, 5)


@pytest.fixture(scope="module")
def phantoms() -> dict[int, Phantom]:
    return {s: make_phantom(s, **SMALL) for s in SEEDS}


def _world_centroid(p: Phantom, sel: np.ndarray) -> np.ndarray:
    ijk = np.argwhere(sel).astype(float)
    return (p.affine[:3, :3] @ ijk.T).T.mean(0) + p.affine[:3, 3]


def test_same_seed_same_phantom() -> None:
    a, b = make_phantom(7, **SMALL), make_phantom(7, **SMALL)
    assert a.spec == b.spec
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(a.face, b.face)
    np.testing.assert_array_equal(a.tissue, b.tissue)
    np.testing.assert_array_equal(a.affine, b.affine)
    c = make_phantom(np.random.default_rng(7), **SMALL)
    np.testing.assert_array_equal(a.data, c.data)
    d = make_phantom(a.spec)
    np.testing.assert_array_equal(a.face, d.face)


def test_different_seeds_differ(phantoms: dict[int, Phantom]) -> None:
    a, b = phantoms[0], phantoms[1]
    assert a.spec != b.spec
    assert not np.array_equal(a.face, b.face) or not np.array_equal(a.affine, b.affine)


def test_arrays_agree_in_shape_and_type(phantoms: dict[int, Phantom]) -> None:
    for p in phantoms.values():
        assert p.data.shape == p.face.shape == p.tissue.shape == SMALL["shape"]
        assert p.face.dtype == bool and p.tissue.dtype == np.uint8
        assert p.data.dtype == np.dtype(STORAGE[p.spec.storage][0])
        np.testing.assert_allclose(np.linalg.norm(p.affine[:3, :3], axis=0), SMALL["spacing"])


def test_mask_nonempty_and_never_on_forbidden_tissue(phantoms: dict[int, Phantom]) -> None:
    for p in phantoms.values():
        assert p.face.sum() > 500
        hit = np.isin(p.tissue[p.face], NEVER_IN_MASK)
        assert not hit.any(), sorted({Tissue(v).name for v in p.tissue[p.face][hit]})


def test_anatomy_present_with_plausible_hu() -> None:
    p = make_phantom(PhantomSpec(shape=(72, 80, 84), spacing=(2.6, 2.6, 2.6), noise_sigma=0.0))
    hu = p.hu()
    for t in (T.SKIN, T.FAT, T.BONE, T.TEETH, T.BRAIN, T.CSF, T.EYE, T.AIRWAY, T.EAR):
        assert (p.tissue == t).sum() > 0, t.name
    assert 700 <= np.median(hu[p.tissue == T.BONE]) <= 1500
    assert np.median(hu[p.tissue == T.TEETH]) >= 2000
    assert 25 <= np.median(hu[p.tissue == T.BRAIN]) <= 45
    assert -100 <= np.median(hu[p.tissue == T.FAT]) <= -50
    for t in (T.VESSEL_INTRACRANIAL, T.VESSEL_NECK, T.VESSEL_FACIAL):
        v = hu[p.tissue == t]
        assert v.size > 0, t.name
        assert np.all((v >= 200) & (v <= 500)), t.name
    assert np.median(hu[p.tissue == T.AIR]) < -950


def test_face_soft_tissue_and_facial_vessels_in_mask(phantoms: dict[int, Phantom]) -> None:
    for p in phantoms.values():
        lab = p.tissue[p.face]
        for t in (T.SKIN, T.FAT, T.AIR):
            assert (lab == t).sum() > 0, t.name
    fine = make_phantom(PhantomSpec(shape=(80, 88, 96), spacing=(2.0, 2.0, 2.2)))
    assert (fine.face & (fine.tissue == T.VESSEL_FACIAL)).sum() > 0
    assert (fine.face & (fine.tissue == T.CARTILAGE)).sum() > 0  # the nose


def test_air_margin_touches_skin(phantoms: dict[int, Phantom]) -> None:
    for p in phantoms.values():
        air = p.face & (p.hu() < -900) & (p.tissue == T.AIR)
        skin = p.face & (p.tissue == T.SKIN)
        near = np.zeros_like(skin)
        for ax in range(3):
            for sh in (-1, 1):
                near |= np.roll(skin, sh, axis=ax)
        assert (air & near).sum() > 0
        assert air.sum() > 0.1 * p.face.sum()


def test_mask_is_anterior_to_brain_in_world(phantoms: dict[int, Phantom]) -> None:
    orders = set()
    for p in phantoms.values():
        orders.add(nib.aff2axcodes(p.affine))
        anterior = p.head_to_world[:3, 1] / np.linalg.norm(p.head_to_world[:3, 1])
        gap = (_world_centroid(p, p.face) - _world_centroid(p, p.tissue == T.BRAIN)) @ anterior
        assert gap > 40.0
        # the head axes stay roughly in the world's (pose tilt is bounded)
        assert anterior[1] > np.cos(np.radians(45))
    assert len(orders) >= 3


def test_explicit_pose_is_respected() -> None:
    base = PhantomSpec(shape=(48, 56, 52), spacing=(4.5, 4.5, 4.5))
    for axis_map, flips in (((0, 1, 2), (False,) * 3), ((2, 0, 1), (True, False, True))):
        p = make_phantom(base, axis_map=axis_map, flips=flips, shape=(52, 48, 56))
        codes = "".join(nib.aff2axcodes(p.affine))
        want = "".join(("LPI" if f else "RAS")[a] for a, f in zip(axis_map, flips, strict=True))
        assert codes == want
        gap = _world_centroid(p, p.face) - _world_centroid(p, p.tissue == T.BRAIN)
        assert gap[1] > 40.0  # unrotated head: anterior is world +y


@pytest.mark.parametrize("storage", sorted(STORAGE))
def test_nifti_round_trip(tmp_path: Path, storage: str) -> None:
    p = make_phantom(3, shape=(40, 44, 36), spacing=(5.0, 5.0, 6.0), storages=(storage,))
    assert p.spec.storage == storage
    img = p.to_nifti()
    path = tmp_path / "ct.nii.gz"
    nib.save(img, path)
    back = nib.load(path)
    hdr = back.header
    assert back.get_data_dtype() == p.data.dtype
    np.testing.assert_array_equal(np.asanyarray(back.dataobj.get_unscaled()), p.data)
    assert back.dataobj.slope == p.slope and back.dataobj.inter == p.inter
    np.testing.assert_allclose(back.get_fdata(), p.hu(), atol=1e-3)
    np.testing.assert_allclose(back.affine, p.affine, atol=1e-5)
    assert int(hdr["qform_code"]) == 1 and int(hdr["sform_code"]) == 1
    assert hdr.get_xyzt_units()[0] == "mm"


def test_padding_outside_fov() -> None:
    spec = PhantomSpec(
        shape=(48, 48, 40), spacing=(5.0, 5.0, 5.0), pad_value=-3024.0, storage="int16"
    )
    p = make_phantom(spec)
    out = p.tissue == T.OUTSIDE_FOV
    assert out.any() and not (out & p.face).any()
    assert np.all(p.hu()[out] == -3024.0)
    assert out[0, 0].all() and not out[24, 24].any()


def test_draw_spec_options() -> None:
    s = draw_spec(1, shape=(32, 40, 48), spacing=(1.0, 2.0, 3.0), max_tilt_deg=5.0)
    assert s.shape == (32, 40, 48) and s.spacing == (1.0, 2.0, 3.0)
    assert max(abs(a) for a in s.rotation_deg) <= 5.0
    free = draw_spec(2, max_voxels=200_000)
    assert np.prod(free.shape) <= 200_000
    assert all(v >= 0.5 for v in free.spacing)
    with pytest.raises(UsageError):
        PhantomSpec(shape=(8, 8, 8), spacing=(1.0, 1.0, 1.0), storage="int8")
    with pytest.raises(UsageError):
        make_phantom("seed")  # type: ignore[arg-type]


def test_labels_do_not_depend_on_the_grid_window() -> None:
    """A sub-grid on the same voxel centres gives the same labels and mask (exact, no seams)."""
    a = make_phantom(
        PhantomSpec(shape=(60, 62, 64), spacing=(4.0, 4.0, 4.0), rotation_deg=(10.0, -5.0, 15.0))
    )
    off, shape_b = np.array([11, 7, 5]), (37, 41, 45)
    wc_b = a.affine[:3, :3] @ (off + (np.array(shape_b) - 1) / 2.0) + a.affine[:3, 3]
    rs = a.head_to_world[:3, :3]
    fc_b = np.array(a.spec.fov_center_mm) + np.linalg.solve(rs, wc_b - a.spec.world_center_mm)
    b = make_phantom(
        a.spec,
        shape=shape_b,
        world_center_mm=tuple(float(v) for v in wc_b),
        fov_center_mm=tuple(float(v) for v in fc_b),
    )
    np.testing.assert_allclose(b.head_to_world, a.head_to_world, atol=1e-9)
    sub = tuple(slice(o, o + n) for o, n in zip(off, shape_b, strict=True))
    assert b.face.any()
    np.testing.assert_array_equal(b.tissue, a.tissue[sub])
    np.testing.assert_array_equal(b.face, a.face[sub])


def test_air_margin_is_thick_in_front_of_masked_skin() -> None:
    from scipy import ndimage

    sp = 2.0
    p = make_phantom(
        PhantomSpec(shape=(90, 100, 110), spacing=(sp,) * 3, fov_center_mm=(0, 20, -40))
    )
    skin = p.face & (p.tissue == T.SKIN)
    dist = ndimage.distance_transform_edt(~skin, sampling=(sp,) * 3)
    near = (p.tissue == T.AIR) & (dist <= 5.0)
    # all but the air beyond the mask's borders (top, bottom, lateral limits) is in the mask
    assert (near & p.face).sum() >= 0.85 * near.sum()


def test_air_margin_is_margin_mm_in_world_millimetres() -> None:
    # an anisotropically scaled head on an anisotropic grid: the mask's air reaches exactly
    # margin_mm from the body (it used to reach 8-15 mm by the shapes' template distances)
    from scipy import ndimage

    spec = PhantomSpec(
        shape=(70, 64, 60),
        spacing=(2.5, 3.0, 3.5),
        scale=(0.9, 1.1, 1.05),
        rotation_deg=(12.0, 0.0, -8.0),
        fov_center_mm=(0, 20, -40),
    )
    p = make_phantom(spec)
    outside = np.isin(p.tissue, [T.AIR, T.SHELL])
    dist = ndimage.distance_transform_edt(outside, sampling=spec.spacing)
    reach = dist[p.face & outside]
    assert reach.max() <= spec.margin_mm + 1e-6
    assert reach.max() >= spec.margin_mm - 1.0
    thin = make_phantom(spec, margin_mm=5.0)
    assert dist[thin.face & outside].max() <= 5.0 + 1e-6
    np.testing.assert_array_equal(thin.face & ~outside, p.face & ~outside)  # same tissue


def test_contrast_phases_set_vessel_and_vein_hu() -> None:
    base = dict(shape=(56, 60, 64), spacing=(4.0, 4.0, 4.0), noise_sigma=0.0)
    venous = make_phantom(PhantomSpec(**base, phase="venous", vessel_hu=180.0, vein_hu=300.0))
    hu = venous.hu()
    assert (venous.tissue == T.VEIN).sum() > 50
    assert np.median(hu[venous.tissue == T.VEIN]) > np.median(hu[venous.tissue == T.VESSEL_NECK])
    assert not (venous.face & (venous.tissue == T.VEIN)).any()
    for seed in range(40):
        s = draw_spec(seed, shape=(8, 8, 8), spacing=(1.0, 1.0, 1.0))
        artery, vein = PHASES[s.phase]
        assert artery[0] <= s.vessel_hu <= artery[1] and vein[0] <= s.vein_hu <= vein[1]
    phases = {draw_spec(seed, shape=(8, 8, 8), spacing=(1.0, 1.0, 1.0)).phase for seed in range(40)}
    assert phases == set(PHASES)


def test_shell_is_in_the_mask_only_within_the_air_margin() -> None:
    base = PhantomSpec(shape=(80, 90, 90), spacing=(2.5, 2.5, 2.5), fov_center_mm=(0, 20, -40))
    bare = make_phantom(base)
    shelled = make_phantom(base, shell=Shell(gap_mm=3.0, thickness_mm=2.0, hu=250.0, hole=0.3))
    on = shelled.tissue == T.SHELL
    assert on.sum() > 200
    assert (bare.tissue[on] == T.AIR).all()  # a device in the air, anatomy unchanged
    assert (shelled.face & on).any()  # inside the margin: masked like the air there
    np.testing.assert_array_equal(shelled.face & ~on, bare.face & ~on)
    assert np.all(np.abs(shelled.hu()[on] - 250.0) < 80.0)


def test_streaks_change_only_the_image() -> None:
    base = PhantomSpec(shape=(64, 70, 72), spacing=(3.0, 3.0, 3.0), noise_sigma=0.0)
    streaks = (Streak(angle_deg=20.0, amplitude_hu=-800.0), Streak(angle_deg=100.0))
    a, b = make_phantom(base), make_phantom(base, streaks=streaks)
    np.testing.assert_array_equal(a.tissue, b.tissue)
    np.testing.assert_array_equal(a.face, b.face)
    diff = np.abs(a.hu() - b.hu())
    assert diff.max() > 200.0
    assert (diff > 50.0).mean() < 0.05  # lines near the teeth, not the whole image


def test_trunk_sections_have_a_body_in_air_and_are_reproducible() -> None:
    from ctadeface.training.phantom import trunk_section

    hu, spacing = trunk_section(0)
    assert hu.ndim == 3 and hu.dtype == np.float32 and np.prod(hu.shape) <= 3_000_000
    assert len(spacing) == 3 and min(spacing) >= 1.0  # mm
    assert (hu > -200).mean() > 0.1 and (hu < -900).mean() > 0.1  # body and air
    again, _ = trunk_section(0)
    np.testing.assert_array_equal(hu, again)
