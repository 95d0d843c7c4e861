"""Tests of ctadeface.training.annotate: the anatomy-driven face annotator (phantoms, one real
head)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from ctadeface.training.annotate import AnnotateParams, annotate_face, annotate_face_landmarks
from ctadeface.training.phantom import MASKABLE, Phantom, Shell, Tissue, make_phantom
from ctadeface.training.train import dice
from tests import VHP_HEAD

# Plain heads (arterial phase, no shells, sheets or streaks): the annotator's validated setting.
SMALL = {
    "shape": (72, 72, 72),
    "spacing": (3.0, 3.0, 3.0),
    "crop": False,
    "pad_prob": 0.0,
    "phase_probs": (1.0, 0.0, 0.0),
    "shell_prob": 0.0,
    "sheet_prob": 0.0,
    "streak_prob": 0.0,
}
VHP = VHP_HEAD
NEVER = np.array(sorted(set(Tissue) - MASKABLE), np.uint8)


@pytest.fixture(scope="module")
def phantoms() -> dict[int, Phantom]:
    # random voxel orders, tilts up to 20 degrees, storages and head sizes
    return {s: make_phantom(s, **SMALL) for s in (11, 12, 13)}


@pytest.fixture(scope="module")
def masks(phantoms: dict[int, Phantom]) -> dict[int, np.ndarray]:
    return {s: annotate_face(p.hu(), p.affine) for s, p in phantoms.items()}


def test_dice_against_phantom(phantoms: dict[int, Phantom], masks: dict[int, np.ndarray]) -> None:
    for s, p in phantoms.items():
        assert masks[s].shape == p.face.shape and masks[s].dtype == bool
        assert dice(masks[s], p.face) >= 0.85, (s, p.spec.rotation_deg, p.spec.axis_map)
    mean = np.mean([dice(masks[s], p.face) for s, p in phantoms.items()])
    assert mean >= 0.88


def test_never_bone_brain_vessels_or_ears(
    phantoms: dict[int, Phantom], masks: dict[int, np.ndarray]
) -> None:
    for s, p in phantoms.items():
        bad = masks[s] & np.isin(p.tissue, NEVER)
        # a few voxels may fall on partial labels (diploe at the frontal bone's edge, airway
        # next to the nostrils): at most 0.5 %; never cortical bone, teeth, brain or vessels
        assert bad.sum() <= 0.005 * masks[s].sum(), (s, np.bincount(p.tissue[bad]))
        for t in (Tissue.BONE, Tissue.TEETH, Tissue.BRAIN, Tissue.VESSEL_INTRACRANIAL):
            assert not (masks[s] & (p.tissue == t)).any(), (s, t.name)


def test_landmarks_follow_pose(phantoms: dict[int, Phantom]) -> None:
    p = phantoms[11]
    _, lm = annotate_face_landmarks(p.hu(), p.affine)
    assert lm.found
    tip_true = p.head_to_world[:3, :3] @ np.array([0.0, 106.0, -37.0]) + p.head_to_world[:3, 3]
    assert np.linalg.norm(lm.nose_tip - tip_true) < 12.0
    # the frame's anterior axis is the head's
    y_true = p.head_to_world[:3, 1] / np.linalg.norm(p.head_to_world[:3, 1])
    assert float(lm.frame[:, 1] @ y_true) > np.cos(np.radians(12.0))


def test_soft_lips_and_chin_lie_in_the_face_tissue(phantoms: dict[int, Phantom]) -> None:
    for p in phantoms.values():
        _, lm = annotate_face_landmarks(p.hu(), p.affine)
        to_w = p.head_to_world
        for point, true in ((lm.lips, (0.0, 89.0, -57.0)), (lm.soft_chin, (0.0, 87.0, -101.0))):
            assert point is not None
            ijk = np.rint(np.linalg.solve(p.affine, np.append(point, 1.0))[:3]).astype(int)
            assert p.face[tuple(ijk)]  # inside the exact mask
            assert p.tissue[tuple(ijk)] not in NEVER  # soft tissue, not bone or teeth
            true_w = to_w[:3, :3] @ np.array(true) + to_w[:3, 3]
            true_ijk = np.linalg.solve(p.affine, np.append(true_w, 1.0))[:3]
            if np.all((true_ijk >= 0) & (true_ijk <= np.array(p.face.shape) - 1)):
                assert np.linalg.norm(point - true_w) < 12.0  # (else the view cuts it)


def test_nose_touching_a_protruding_chin_is_found_by_its_aperture() -> None:
    # tilted back 17 degrees under a shell, at 3 x 4 mm in-plane: the chin protrudes as far as
    # the nose and touches it in one skin protrusion; only the nose has the piriform aperture
    # (the nasal cavity) behind it
    p = make_phantom(3_000_001, max_voxels=300_000)
    _, lm = annotate_face_landmarks(p.hu(), p.affine)
    assert lm.found
    tip_true = p.head_to_world[:3, :3] @ np.array([0.0, 106.0, -37.0]) + p.head_to_world[:3, 3]
    assert np.linalg.norm(lm.nose_tip - tip_true) < 15.0


def test_nose_cut_by_a_round_fov_is_not_mistaken_for_the_chin() -> None:
    # bent forward 12 degrees, the nose cut by a circular field of view padded with -1024 HU
    # (air by value): the chin protrudes more than the cut nose; the nose lies below the orbits
    p = make_phantom(3_500_071, max_voxels=300_000)
    assert p.spec.pad_value == -1024.0
    assert (p.tissue == Tissue.OUTSIDE_FOV).any()
    m, lm = annotate_face_landmarks(p.hu(), p.affine)
    assert lm.found
    to_w = p.head_to_world
    tip_true = to_w[:3, :3] @ np.array([0.0, 101.0, -35.0]) + to_w[:3, 3]
    chin = to_w[:3, :3] @ np.array([0.0, 89.0, -101.0]) + to_w[:3, 3]
    assert np.linalg.norm(lm.nose_tip - tip_true) < 25.0
    assert np.linalg.norm(lm.nose_tip - chin) > 50.0
    # nothing outside the field of view, though its padding reads as air
    assert not (m & (p.tissue == Tissue.OUTSIDE_FOV)).any()
    # (0.744 since the phantom's margin is exact: 8 mm of air on voxels of up to 4 mm)
    assert dice(m, p.face) >= 0.72


def test_head_tilted_back_with_the_nose_cut_by_the_fov_gets_a_mask() -> None:
    # tilted back 19.5 degrees and the grid ends 12 mm behind the nose tip: no protrusion is
    # left; the nose is placed below the orbits and the mask covers what is left of it
    p = make_phantom(5, **SMALL, random_order=False)
    p = make_phantom(p.spec, rotation_deg=(19.5, 0.0, 0.0))
    to_w = p.head_to_world
    tip_true = to_w[:3, :3] @ np.array([0.0, 101.0, -35.0]) + to_w[:3, 3]
    ys = p.affine[1, 1] * np.arange(p.data.shape[1]) + p.affine[1, 3]
    keep = int(np.sum(ys <= tip_true[1] - 12.0))
    hu, face = p.hu()[:, :keep], p.face[:, :keep]
    m, lm = annotate_face_landmarks(hu, p.affine)
    assert lm.found and m.any()
    assert np.linalg.norm(lm.nose_tip - tip_true) < 25.0
    assert dice(m, face) >= 0.7
    # the stump of the nose: the last voxel row of the grid in front of the true tip
    ijk = np.linalg.solve(p.affine[:3, :3], tip_true - p.affine[:3, 3])
    i, k = (round(float(v)) for v in ijk[[0, 2]])
    stump = np.flatnonzero(hu[i, :, k] > -500.0)
    assert len(stump) and m[i - 1 : i + 2, stump[-1], k - 1 : k + 2].any()


def test_air_margin_is_measured_from_the_skin_not_a_shell(phantoms: dict[int, Phantom]) -> None:
    sheet = Shell(gap_mm=5.0, thickness_mm=2.0, hu=150.0, period_mm=0.0, hole=0.0)
    p = make_phantom(phantoms[11].spec, shell=sheet)
    mask = annotate_face(p.hu(), p.affine)
    body = ~np.isin(p.tissue, (Tissue.AIR, Tissue.SHELL))
    dist = ndi.distance_transform_edt(~body, sampling=p.spec.spacing)
    margin = AnnotateParams().air_margin_mm
    assert (mask & (dist > margin + 6.0)).sum() <= 0.002 * mask.sum()
    assert dice(mask, p.face) >= 0.85


def test_a_thicker_lateral_margin_only_adds_air(
    phantoms: dict[int, Phantom], masks: dict[int, np.ndarray]
) -> None:
    p = phantoms[11]
    wide = annotate_face(p.hu(), p.affine, AnnotateParams(air_margin_lateral_mm=12.0))
    air = p.tissue == Tissue.AIR
    # the lateral margin only adds air: everything else is the same
    assert not (masks[11] & ~wide).any()
    assert ((wide & ~masks[11]) & ~air).sum() == 0
    assert (wide & ~masks[11] & air).sum() > 0.02 * (masks[11] & air).sum()


def test_pitch_from_forehead_and_lips_when_the_chin_is_cut() -> None:
    # head bent forward 12 degrees, the field of view ends below the lips (no chin): the
    # forehead -> lips tangent gives the pitch
    p = make_phantom(5, **SMALL, random_order=False)
    p = make_phantom(
        p.spec, rotation_deg=(-12.0, 0.0, 0.0), fov_center_mm=(0.0, 5.0, -35.0), shape=(72, 72, 40)
    )
    _, lm = annotate_face_landmarks(p.hu(), p.affine)
    assert lm.found and lm.pogonion is None
    assert abs(lm.pitch - (-12.0)) < 5.0, lm.pitch


def test_padding_outside_fov_and_ras_order() -> None:
    p = make_phantom(21, **SMALL, random_order=False)
    padded = make_phantom(p.spec, pad_value=-3024.0, fov_radius_frac=0.97)
    m0 = annotate_face(p.hu(), p.affine)
    m1 = annotate_face(padded.hu(), padded.affine)
    assert dice(m1, padded.face) >= 0.85
    assert not (m1 & (padded.tissue == Tissue.OUTSIDE_FOV)).any()
    assert dice(m0, m1) >= 0.9


def test_deterministic(phantoms: dict[int, Phantom], masks: dict[int, np.ndarray]) -> None:
    p = phantoms[12]
    assert np.array_equal(annotate_face(p.hu(), p.affine), masks[12])


def test_brain_only_crop_gives_empty_mask() -> None:
    # the field of view centred high on the vault: no nose, no face
    p = make_phantom(5, **SMALL, random_order=False)
    p = make_phantom(p.spec, fov_center_mm=(0.0, -5.0, 95.0), shape=(72, 72, 30))
    assert annotate_face(p.hu(), p.affine).sum() <= 0.01 * p.data.size


def test_abdomen_cylinder_constant_and_air_give_empty_masks() -> None:
    n = 48
    i, j, _ = np.meshgrid(*(np.arange(n, dtype=np.float32),) * 3, indexing="ij")
    cyl = np.where((i - 24) ** 2 + ((j - 24) / 1.3) ** 2 < 18**2, 40.0, -1000.0).astype(np.float32)
    cyl[20:28, 18:30, :] = 700.0  # a spine
    aff = np.diag([6.0, 6.0, 6.0, 1.0])
    for vol in (cyl, np.zeros((n, n, n), np.float32), np.full((n, n, n), -1000, np.float32)):
        m = annotate_face(vol, aff)
        assert m.shape == vol.shape and not m.any()
    assert not annotate_face(np.zeros((1, 5, 5), np.float32), np.eye(4)).any()


def test_params_are_frozen_with_documented_defaults() -> None:
    p = AnnotateParams()
    assert p.air_margin_mm >= 5.0 and p.forehead_mm == 40.0
    assert p.air_margin_lateral_mm == 8.0 == p.air_margin_mm  # the phantoms' margin
    assert p.submental_half_width_mm == 70.0 and p.lip_line_deg == 0.0
    assert p.tip_below_orbits_mm == (15.0, 65.0) and p.orbit_max_depth_mm == 70.0
    assert p.cut_nose_min_depth_mm == 5.0 and p.fov_roundness == 0.95
    with pytest.raises(AttributeError):
        p.air_margin_mm = 3.0  # type: ignore[misc]


@pytest.mark.skipif(not VHP.exists(), reason="shared head data not available")
def test_real_head_mask_is_anterior_and_covers_nose_tip() -> None:
    from ctadeface.io import load_ct

    ct = load_ct(VHP)
    hu = ct.hu()
    m, lm = annotate_face_landmarks(hu, ct.affine)
    assert lm.found and m.any()
    idx = np.argwhere(m)[::50].astype(float)
    cen = idx @ ct.affine[:3, :3].T + ct.affine[:3, 3]
    body = np.argwhere(hu > -300)[::500].astype(float)
    bcen = body @ ct.affine[:3, :3].T + ct.affine[:3, 3]
    assert cen.mean(0)[1] > bcen.mean(0)[1] + 40.0  # the mask lies anterior (RAS y)
    # the most anterior skin point (nose tip) lies inside the mask
    skin = np.argwhere(hu > -300)
    world_y = skin @ ct.affine[:3, :3].T[:, 1] + ct.affine[1, 3]
    tip = skin[int(np.argmax(world_y))]
    lo = np.maximum(tip - 2, 0)
    assert m[lo[0] : tip[0] + 3, lo[1] : tip[1] + 3, lo[2] : tip[2] + 3].any()
    assert not (m & (hu > 600)).any()
