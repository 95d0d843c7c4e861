"""Synthetic CT angiography heads with their exact face mask.

A phantom is built from implicit shapes (ellipsoids, tubes along polylines, height fields) in a
canonical *head frame*: template millimetres, RAS-like axes (x to the subject's right, y anterior,
z superior), origin near the middle of the skull base (the ear canals lie at about y = -2, z = 0;
the Frankfurt plane is z = 0). Every voxel centre is mapped to world (RAS+ mm) by the image affine,
then into the head frame by the inverse head pose (rotation, translation, per-axis size scale),
and the anatomy and the face mask are evaluated there. Labels and mask are therefore exact on the
voxel centres (no partial volume) and consistent with each other by construction.

The face mask follows ``docs/mask-definition.md``: soft tissue (skin, fat, muscle, cartilage,
the anterior orbit, facial arteries) in front of the facial skeleton, from 40 mm above the
supraorbital rims down to the hyoid, laterally to 10 mm in front of the tragus, plus an 8 mm
margin of outside air in front of that skin: the air within 8 mm of the body, measured in world
millimetres on the grid (Euclidean, between voxel centres; the shapes' approximate template
distances would stretch it to 8-15 mm). Bone, teeth, intracranial content, cavities and airway,
ears and neck vessels are never in it.

Array order is "as on disk": the array index (i, j, k) maps to world RAS+ mm by ``affine``. The
voxel order (axis permutation and flips), spacing, storage dtype and scaling are drawn at random
so that code under test sees RAS, LPS, PIL, ... images.

What real CTA shows besides anatomy is drawn too: the contrast phase (arterial: arteries bright;
venous: dural sinuses and jugular veins bright, arteries dimmer; none: all vessels about 40 HU),
streak artefacts from dental fillings (bright and dark lines in the axial plane through the
teeth), a thermoplastic immobilisation shell or a plastic sheet over the face (thin, 50-300 HU,
perforated or not, touching the skin or a few mm in front of it), and padding outside a circular
field of view (-1024, -2048 or -3024 HU). A shell or sheet is a device, not face: only its part
inside the mask's air margin belongs to the mask (there it may be removed, as the air is).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import overload

import nibabel as nib
import numpy as np
from scipy import ndimage

from ctadeface.body import occupied
from ctadeface.errors import UsageError

log = logging.getLogger(__name__)

Vec3 = tuple[float, float, float]
Arr = np.ndarray

#: Storage kinds: name -> (numpy dtype, slope, inter). HU = stored * slope + inter.
STORAGE: dict[str, tuple[str, float, float]] = {
    "int16": ("int16", 1.0, 0.0),
    "int16_offset": ("int16", 1.0, -1024.0),
    "int16_half": ("int16", 0.5, 0.0),
    "uint16": ("uint16", 1.0, -1024.0),
    "float32": ("float32", 1.0, 0.0),
}


class Tissue(IntEnum):
    """Tissue labels of :attr:`Phantom.tissue` (uint8).

    AIR is outside air (also the nostrils and ear canals, which open to it); AIRWAY is air inside
    the body (nasal cavity, paranasal sinuses, pharynx, trachea). MUSCLE stands for all deep soft
    tissue (muscle, tongue, glands, optic nerve). BONE is cortical bone, MARROW cancellous bone
    and the skull's diploe. VESSEL_NECK holds the carotid and vertebral arteries outside the
    cranial cavity, VESSEL_INTRACRANIAL their continuation inside it (ICA, circle of Willis, ACA,
    MCA, PCA, basilar). VESSEL_FACIAL: external carotid and facial/angular arteries. EAR: the
    pinnae. OUTSIDE_FOV: padding outside the scanner's circular reconstruction field of view.
    VEIN: dural venous sinuses (superior sagittal, transverse, sigmoid) and internal jugular
    veins. SHELL: an immobilisation shell or plastic sheet over the face (a device).
    """

    AIR = 0
    SKIN = 1
    FAT = 2
    MUSCLE = 3
    CARTILAGE = 4
    BONE = 5
    MARROW = 6
    TEETH = 7
    BRAIN = 8
    CSF = 9
    EYE = 10
    LENS = 11
    VESSEL_INTRACRANIAL = 12
    VESSEL_NECK = 13
    VESSEL_FACIAL = 14
    AIRWAY = 15
    EAR = 16
    OUTSIDE_FOV = 17
    VEIN = 18
    SHELL = 19


#: Labels that may be in the face mask (where they lie in the facial region).
MASKABLE = frozenset(
    {
        Tissue.AIR,
        Tissue.SKIN,
        Tissue.FAT,
        Tissue.MUSCLE,
        Tissue.CARTILAGE,
        Tissue.EYE,
        Tissue.LENS,
        Tissue.VESSEL_FACIAL,
        Tissue.SHELL,  # only where it lies in the air margin, like the air
    }
)

#: Mean HU of each tissue (vessels take the spec's contrast value, OUTSIDE_FOV its pad value).
TISSUE_HU: dict[Tissue, float] = {
    Tissue.AIR: -1000.0,
    Tissue.SKIN: 45.0,
    Tissue.FAT: -90.0,
    Tissue.MUSCLE: 45.0,
    Tissue.CARTILAGE: 100.0,
    Tissue.BONE: 1350.0,
    Tissue.MARROW: 420.0,
    Tissue.TEETH: 2500.0,
    Tissue.BRAIN: 34.0,
    Tissue.CSF: 6.0,
    Tissue.EYE: 10.0,
    Tissue.LENS: 110.0,
    Tissue.VESSEL_INTRACRANIAL: 350.0,
    Tissue.VESSEL_NECK: 350.0,
    Tissue.VESSEL_FACIAL: 350.0,
    Tissue.AIRWAY: -990.0,
    Tissue.EAR: 50.0,
    Tissue.OUTSIDE_FOV: -1024.0,
    Tissue.VEIN: 120.0,
    Tissue.SHELL: 200.0,
}

#: Contrast phases: name -> (artery HU range, vein HU range) drawn by :func:`draw_spec`.
PHASES: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "arterial": ((220.0, 480.0), (60.0, 180.0)),
    "venous": ((130.0, 250.0), (180.0, 330.0)),
    "none": ((35.0, 55.0), (35.0, 55.0)),
}


@dataclass(frozen=True)
class Shell:
    """A device over the face: thermoplastic mask (perforated) or plastic sheet (solid).

    gap_mm: distance from the skin (0 = touching); thickness_mm; hu: its density;
    period_mm: spacing of the perforation lattice (0 = a solid sheet); hole: fraction of the
    lattice that is open (0-0.9); y_back: the shell covers the head frame's y > y_back (mm);
    z_low: and z > z_low (mm).
    """

    gap_mm: float = 1.0
    thickness_mm: float = 1.5
    hu: float = 200.0
    period_mm: float = 6.0
    hole: float = 0.5
    y_back: float = -10.0
    z_low: float = -140.0


@dataclass(frozen=True)
class Streak:
    """One streak artefact: a line in the head's axial plane through a source (head frame,
    template mm) at ``angle_deg``, with ``amplitude_hu`` (signed) at the source, Gaussian
    ``width_mm`` across the line and ``height_mm`` in z, decaying over ``length_mm``."""

    source: Vec3 = (15.0, 60.0, -63.5)
    angle_deg: float = 0.0
    amplitude_hu: float = -600.0
    width_mm: float = 1.5
    height_mm: float = 3.0
    length_mm: float = 90.0


@dataclass(frozen=True)
class PhantomSpec:
    """Every random draw of one phantom; :func:`make_phantom` is a pure function of it.

    shape, spacing: array shape and voxel size (mm) per array axis, in on-disk order.
    axis_map: the world axis (0 = R/L, 1 = A/P, 2 = S/I) each array axis runs along.
    flips: per array axis, True when it runs towards L, P or I (the negative world axis).
    scale: head size factors along the head's x, y, z axes.
    rotation_deg: head pose, pitch (about x), roll (about y), yaw (about z), degrees.
    fov_center_mm: the head-frame point (template mm) that lies at the centre of the grid; this
      is what crops the field of view (a high z cuts the neck, a low z the vertex).
    world_center_mm: world (RAS+ mm) position of the grid centre.
    storage: a key of :data:`STORAGE` (stored dtype, slope, inter).
    noise_sigma: Gaussian noise, HU. vessel_hu: contrast-filled arterial lumen, HU.
    pad_value: HU outside a circular axial field of view, or None for no padding.
    fov_radius_frac: radius of that circle as a fraction of half the smaller axial extent.
    margin_mm: thickness of the air margin of the mask in front of the skin, mm.
    noise_seed: seed of the noise generator.
    phase: contrast phase (a key of :data:`PHASES`; informative, the HU are vessel_hu/vein_hu).
    vein_hu: venous sinuses and jugular veins, HU.
    shell: a device over the face, or None. streaks: dental streak artefacts.
    """

    shape: tuple[int, int, int]
    spacing: Vec3
    axis_map: tuple[int, int, int] = (0, 1, 2)
    flips: tuple[bool, bool, bool] = (False, False, False)
    scale: Vec3 = (1.0, 1.0, 1.0)
    rotation_deg: Vec3 = (0.0, 0.0, 0.0)
    fov_center_mm: Vec3 = (0.0, 5.0, -5.0)
    world_center_mm: Vec3 = (0.0, 0.0, 0.0)
    storage: str = "int16"
    noise_sigma: float = 10.0
    vessel_hu: float = 350.0
    pad_value: float | None = None
    fov_radius_frac: float = 1.0
    margin_mm: float = 8.0
    noise_seed: int = 0
    phase: str = "arterial"
    vein_hu: float = 120.0
    shell: Shell | None = None
    streaks: tuple[Streak, ...] = ()

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise UsageError(f"phantom: shape must be 3 positive ints, got {self.shape}")
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise UsageError(f"phantom: spacing must be 3 positive mm values, got {self.spacing}")
        if sorted(self.axis_map) != [0, 1, 2]:
            raise UsageError(f"phantom: axis_map must permute (0, 1, 2), got {self.axis_map}")
        if self.storage not in STORAGE:
            raise UsageError(f"phantom: storage {self.storage!r} not in {sorted(STORAGE)}")
        if self.phase not in PHASES:
            raise UsageError(f"phantom: phase {self.phase!r} not in {sorted(PHASES)}")


@dataclass(frozen=True)
class Phantom:
    """A synthetic CTA head: stored image, geometry and exact labels.

    data: stored values (dtype of ``spec.storage``), shape (ni, nj, nk), array order as on disk.
    slope, inter: HU = data * slope + inter. affine: 4x4 voxel index -> world RAS+ mm.
    face: bool, exact face mask. tissue: uint8 :class:`Tissue` labels. Both same shape as data.
    head_to_world: 4x4 head frame (template mm) -> world RAS+ mm (pose and size scale).
    """

    data: Arr
    slope: float
    inter: float
    affine: Arr
    face: Arr
    tissue: Arr
    spec: PhantomSpec
    head_to_world: Arr

    def hu(self) -> Arr:
        """The image in HU, float32, same array order."""
        return (
            self.data.astype(np.float32) * np.float32(self.slope) + np.float32(self.inter)
        ).astype(np.float32)

    def to_nifti(self) -> nib.Nifti1Image:
        """A NIfTI-1 image of the stored data: qform = sform = affine (code 1, scanner),
        scl_slope/scl_inter set, units mm. Saving it writes ``data`` unchanged with that scaling,
        so a loaded copy gives HU; in memory (before saving) ``get_fdata()`` is the stored data."""
        img = nib.Nifti1Image(self.data, self.affine)
        hdr = img.header
        hdr.set_data_dtype(self.data.dtype)
        hdr.set_qform(self.affine, code=1)
        hdr.set_sform(self.affine, code=1)
        hdr.set_xyzt_units("mm", "sec")
        hdr.set_slope_inter(self.slope, self.inter)
        hdr["descrip"] = b"ctadeface synthetic CTA phantom"
        return img


# ---------------------------------------------------------------------------------------------
# Shapes. Signed distances are in template mm (negative inside); all are clamped at _CLAMP so
# that skipping a shape whose box is far from a block gives exactly the same result.

_CLAMP = 24.0


def _rot_z(deg: float) -> Arr:
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class _Ell:
    """Ellipsoid, optionally rotated about z by rot_deg (the local x axis turns towards y)."""

    c: Vec3
    r: Vec3
    rot_deg: float = 0.0

    def box(self, pad: float) -> tuple[Arr, Arr]:
        e = max(self.r) * (1.0 + pad / min(self.r))
        return np.array(self.c) - e, np.array(self.c) + e

    def sdf(self, x: Arr, y: Arr, z: Arr) -> Arr:
        px, py, pz = x - self.c[0], y - self.c[1], z - self.c[2]
        if self.rot_deg:
            m = _rot_z(self.rot_deg).T  # world -> local
            px, py = m[0, 0] * px + m[0, 1] * py, m[1, 0] * px + m[1, 1] * py
        rx, ry, rz = self.r
        k0 = np.sqrt((px / rx) ** 2 + (py / ry) ** 2 + (pz / rz) ** 2)
        k1 = np.sqrt((px / rx**2) ** 2 + (py / ry**2) ** 2 + (pz / rz**2) ** 2)
        near = k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)
        d = np.where(k0 < 0.5, (k0 - 1.0) * min(self.r), near)
        return np.minimum(d, _CLAMP).astype(np.float32)


@dataclass(frozen=True)
class _Tube:
    """Tube (capsules) along a polyline, radius linear from r0 to r1 within each segment."""

    pts: tuple[Vec3, ...]
    r0: float
    r1: float | None = None

    def box(self, pad: float) -> tuple[Arr, Arr]:
        p = np.array(self.pts)
        e = max(self.r0, self.r1 or 0.0) + pad
        return p.min(0) - e, p.max(0) + e

    def segments(self) -> list[tuple[Arr, Arr, float, float]]:
        p = np.array(self.pts, dtype=np.float64)
        n = len(p) - 1
        r1 = self.r0 if self.r1 is None else self.r1
        radii = np.linspace(self.r0, r1, n + 1)
        return [(p[i], p[i + 1], float(radii[i]), float(radii[i + 1])) for i in range(n)]


def _seg_sdf(x: Arr, y: Arr, z: Arr, a: Arr, b: Arr, ra: float, rb: float) -> Arr:
    ab = b - a
    ll = float(ab @ ab)
    px, py, pz = x - a[0], y - a[1], z - a[2]
    t = np.clip((px * ab[0] + py * ab[1] + pz * ab[2]) / ll, 0.0, 1.0)
    dx, dy, dz = px - t * ab[0], py - t * ab[1], pz - t * ab[2]
    return (np.sqrt(dx * dx + dy * dy + dz * dz) - (ra + t * (rb - ra))).astype(np.float32)


def _smin(a: Arr, b: Arr, k: float) -> Arr:
    """Smooth union of two distances (k mm blend)."""
    if k <= 0:
        return np.minimum(a, b)
    h = np.maximum(k - np.abs(a - b), 0.0) / k
    return (np.minimum(a, b) - h * h * k * 0.25).astype(np.float32)


def _mirror(pts: Sequence[Vec3]) -> tuple[Vec3, ...]:
    return tuple((-p[0], p[1], p[2]) for p in pts)


# ---------------------------------------------------------------------------------------------
# Template anatomy (head frame, template mm). Paired structures are given for the right side
# (+x) and mirrored.


def _pair(e: _Ell) -> tuple[_Ell, _Ell]:
    (x, y, z), r, a = e.c, e.r, e.rot_deg
    return e, _Ell((-x, y, z), r, -a)


def _tpair(t: _Tube) -> tuple[_Tube, _Tube]:
    return t, _Tube(_mirror(t.pts), t.r0, t.r1)


_CAV_C: Vec3 = (0.0, -8.0, 30.0)  # cranial cavity (inner table)
_CAV_R: Vec3 = (66.0, 84.0, 72.0)
_SKULL_T = 7.0  # cranial vault thickness
_SCALP_T = 6.0  # scalp thickness over the vault
# Floor of the cranial cavity z = g(y): posterior fossa, middle fossa, anterior fossa.
_FLOOR_Y = (-300.0, -25.0, -8.0, 18.0, 32.0, 300.0)
_FLOOR_Z = (-38.0, -38.0, -16.0, -16.0, 18.0, 18.0)

Z_RIM = 12.0  # supraorbital rims
Z_FOREHEAD = Z_RIM + 40.0  # upper limit of the mask
Z_HYOID = -124.0  # lower limit of the mask
Y_TRAGUS = 2.0
Y_POST = Y_TRAGUS + 10.0  # lateral/posterior limit of the facial mask
Y_FOREHEAD_POST = 30.0  # posterior limit of the forehead part of the mask
X_FOREHEAD = 58.0

# fmt: off
# Front of the facial skeleton: y = B(x, z) = yB(z) - kB(z) x^2 - K4 x^4 (+ nasal bones).
_B_Z = (-400, -124, -118, -113, -108, -100, -90, -80, -72, -64, -56, -48, -40, -30, -20, -10,
        0, 8, 14, 30)
_B_Y = (34, 34, 34, 62, 72, 77, 74, 71, 72, 75, 76, 74, 73, 75, 77, 78, 78, 79, 80, 83)
_B_K = (0.0, 0.0, 0.004, 0.02, 0.028, 0.03, 0.03, 0.03, 0.032, 0.034, 0.032, 0.026, 0.02, 0.012,
        0.009, 0.0085, 0.0085, 0.0085, 0.0085, 0.008)
_B_K4 = 1.4e-6
# Skin of the face (before nose, lips, chin, eyelids): same form.
_S_Z = (-400, -140, -128, -122, -116, -108, -100, -90, -80, -70, -60, -50, -40, -30, -20, -10,
        0, 10, 20)
_S_Y = (40, 40, 42, 55, 74, 84, 86, 83, 80, 82, 84, 84, 84, 85, 86, 84, 82, 88, 90)
_S_K = (0.0, 0.0, 0.0, 0.004, 0.012, 0.014, 0.014, 0.014, 0.014, 0.013, 0.012, 0.011, 0.0105,
        0.0105, 0.0105, 0.0105, 0.0105, 0.009, 0.008)
_S_K4 = 1.2e-6
_FACE_BOX = (np.array([-95.0, -55.0, -165.0]), np.array([95.0, 125.0, 40.0]))

# Soft-tissue body parts (unioned into the body surface).
_CHEEKS = _pair(_Ell((36.0, 58.0, -34.0), (12.0, 10.0, 14.0)))
_BROWS = _pair(_Ell((30.0, 82.0, 13.0), (20.0, 4.0, 5.0)))
_LIPS = (_Ell((0.0, 83.0, -57.0), (24.0, 8.0, 6.5)), _Ell((0.0, 81.0, -69.0), (22.0, 8.0, 6.5)))
_CHIN = _Ell((0.0, 80.0, -101.0), (19.0, 9.0, 12.0))
# External nose: a wedge under the dorsum line (nasion -> tip) with rounded tip and alae.
_NASION = (83.0, 3.0)  # (y, z)
_TIP = (101.0, -35.0)
_SUBNASALE = (86.0, -47.0)
_NOSE_SIDE_DEG = 36.0  # sidewall angle: half width grows by tan(angle) per mm behind the dorsum
_NOSE_BOX = (np.array([-25.0, 50.0, -50.0]), np.array([25.0, 110.0, 12.0]))
_NOSE_TIP = _Ell((0.0, 98.0, -37.0), (10.0, 8.0, 7.5))
_ALAE = _pair(_Ell((13.0, 88.0, -41.0), (7.0, 8.0, 6.5)))
_NOSE_BASE_Z = -47.0
_NOSTRILS = (*_pair(_Ell((6.5, 95.0, -44.0), (3.5, 6.0, 4.0))),
             *_tpair(_Tube(((7.0, 94.0, -44.0), (8.0, 80.0, -38.0)), 3.0)))
_GLOBE_C: Vec3 = (31.0, 66.0, -3.0)
_GLOBE_R = 11.5
_LID_T = 3.0
_NECK_C = (0.0, -14.0)
_NECK_R = (54.0, 56.0)
_NECK_TOP = -30.0
_PINNA = _pair(_Ell((80.0, -10.0, 2.0), (5.0, 17.0, 30.0), -20.0))
_CONCHA = _pair(_Ell((85.0, -5.0, -2.0), (4.0, 9.0, 11.0)))
_EAR_CANALS = _tpair(_Tube(((67.0, -2.0, -2.0), (84.0, -2.0, -1.0)), 3.5))

# Deep structures.
_BUCCAL_FAT = _pair(_Ell((38.0, 48.0, -50.0), (8.0, 14.0, 14.0)))
_ORBITS = _pair(_Ell((31.0, 50.0, -3.0), (16.0, 26.0, 14.0)))
_GLOBES = _pair(_Ell(_GLOBE_C, (_GLOBE_R,) * 3))
_LENSES = _pair(_Ell((31.0, 76.0, -3.0), (4.5, 1.8, 4.5)))
_OPTIC = _tpair(_Tube(((31.0, 55.0, -3.0), (14.0, 25.0, 4.0)), 2.2))
_VENTRICLES = (*_pair(_Ell((11.0, -2.0, 38.0), (5.0, 28.0, 9.0), 8.0)),
               _Ell((0.0, -2.0, 26.0), (1.5, 12.0, 7.0)))
_FRONTAL_BOSS = _Ell((0.0, 78.0, 24.0), (24.0, 8.0, 14.0))
_FRONTAL_SINUS = _Ell((0.0, 79.0, 24.0), (16.0, 4.0, 9.0))
_MAX_SINUSES = _pair(_Ell((24.0, 46.0, -28.0), (13.0, 16.0, 15.0)))
_NASAL_CAVITY = _Ell((0.0, 46.0, -24.0), (13.0, 28.0, 20.0))
_AIRWAY = _Tube(((0.0, 22.0, -28.0), (0.0, 10.0, -45.0), (0.0, 5.0, -75.0), (0.0, 12.0, -110.0),
                 (0.0, 16.0, -130.0), (0.0, 18.0, -150.0), (0.0, 20.0, -400.0)), 8.0, 7.0)
_ZYG_ARCHES = _tpair(_Tube(((58.0, 36.0, -10.0), (64.0, 4.0, -8.0)), 3.5))
_RAMI = _pair(_Ell((48.0, 4.0, -55.0), (4.5, 14.0, 38.0)))
_PETROUS = _pair(_Ell((30.0, -12.0, -18.0), (20.0, 8.0, 8.0), -35.0))
_HYOID = _Tube(((-20.0, 10.0, -122.0), (-12.0, 26.0, -122.0), (0.0, 30.0, -122.0),
                (12.0, 26.0, -122.0), (20.0, 10.0, -122.0)), 2.5)
_SPINE = _Tube(((0.0, -16.0, -38.0), (0.0, -18.0, -80.0), (0.0, -22.0, -140.0),
                (0.0, -24.0, -400.0)), 8.0)

# Arteries, right side (the left is mirrored): polyline, radius at start and end.
_NECK_ARTERIES = (
    # common and internal carotid, up to the terminal ICA
    (((22.0, 12.0, -400.0), (22.0, 12.0, -135.0)), 3.6, 3.4),
    (((22.0, 12.0, -135.0), (24.0, 4.0, -100.0), (23.0, -2.0, -60.0), (19.0, -2.0, -32.0),
      (17.0, 6.0, -16.0), (16.0, 10.0, -4.0), (13.0, 10.0, 6.0), (13.0, 8.0, 12.0)), 2.8, 2.2),
    # middle cerebral
    (((13.0, 8.0, 12.0), (28.0, 10.0, 14.0), (42.0, 8.0, 16.0), (50.0, 0.0, 24.0),
      (54.0, -12.0, 38.0), (52.0, -30.0, 55.0)), 1.7, 1.2),
    # anterior cerebral
    (((13.0, 8.0, 12.0), (3.0, 18.0, 14.0), (2.0, 32.0, 20.0), (2.0, 48.0, 36.0),
      (2.0, 50.0, 56.0), (2.0, 30.0, 72.0), (2.0, 0.0, 78.0), (2.0, -30.0, 70.0)), 1.3, 1.0),
    # posterior communicating, posterior cerebral
    (((13.0, 8.0, 12.0), (10.0, -6.0, 8.0)), 0.9, 0.9),
    (((0.0, -6.0, 8.0), (10.0, -6.0, 8.0), (22.0, -18.0, 12.0), (26.0, -40.0, 16.0),
      (20.0, -65.0, 20.0)), 1.3, 1.0),
    # vertebral, up to the basilar origin
    (((25.0, -20.0, -400.0), (25.0, -20.0, -70.0), (26.0, -24.0, -52.0), (18.0, -34.0, -44.0),
      (6.0, -22.0, -36.0), (0.0, -14.0, -30.0)), 2.0, 1.8),
)
_MIDLINE_ARTERIES = (
    (((0.0, -14.0, -30.0), (0.0, -12.0, -14.0), (0.0, -8.0, 2.0), (0.0, -6.0, 8.0)), 1.9, 1.7),
    (((-3.0, 18.0, 14.0), (3.0, 18.0, 14.0)), 1.0, 1.0),  # anterior communicating
)
# external carotid -> facial artery -> angular artery, through the cheek and beside the nose
_FACIAL_ARTERY = (
    ((22.0, 12.0, -135.0), (27.0, 20.0, -122.0), (32.0, 30.0, -116.0), (40.0, 46.0, -110.0),
     (40.0, 48.0, -92.0), (34.0, 58.0, -72.0), (28.0, 68.0, -58.0), (20.0, 74.0, -42.0),
     (16.0, 78.0, -24.0), (13.0, 79.0, -10.0), (14.0, 79.0, -6.0)), 1.8, 1.2)
# fmt: on


def _arteries() -> tuple[tuple[_Tube, str], ...]:
    """Arterial tubes with their group: "neck" (carotid/vertebral system; labelled
    intracranial inside the cranial cavity) or "facial"."""
    out: list[tuple[_Tube, str]] = []
    for pts, r0, r1 in _NECK_ARTERIES:
        out += [(t, "neck") for t in _tpair(_Tube(pts, r0, r1))]
    out += [(_Tube(pts, r0, r1), "neck") for pts, r0, r1 in _MIDLINE_ARTERIES]
    facial, f0, f1 = _FACIAL_ARTERY
    out += [(t, "facial") for t in _tpair(_Tube(facial, f0, f1))]
    return tuple(out)


_ARTERIES = _arteries()

# fmt: off
# Veins, right side (mirrored): transverse -> sigmoid sinus -> internal jugular vein.
_SSS = _Tube(((0.0, 42.0, 81.0), (0.0, 18.7, 93.0), (0.0, -8.0, 97.0), (0.0, -34.7, 93.0),
              (0.0, -58.0, 81.0), (0.0, -75.6, 63.0), (0.0, -85.0, 41.6), (0.0, -85.0, 24.0)),
             1.5, 4.0)
_SIGMOID = _tpair(_Tube(((0.0, -85.0, 24.0), (30.0, -76.0, 20.0), (50.0, -52.0, 12.0),
                         (52.0, -35.0, 0.0), (42.0, -22.0, -14.0), (33.0, -14.0, -28.0)), 3.5))
_JUGULAR = _tpair(_Tube(((33.0, -14.0, -28.0), (32.0, -5.0, -45.0), (32.0, 6.0, -80.0),
                         (31.0, 12.0, -135.0), (30.0, 12.0, -400.0)), 3.5, 5.5))
# fmt: on
_VEINS = (_SSS, *_SIGMOID, *_JUGULAR)


# ---------------------------------------------------------------------------------------------
# Evaluation on one block of voxel centres.


@dataclass(frozen=True)
class _Block:
    """Head-frame coordinates (template mm) of a block of voxel centres, flat float32."""

    x: Arr
    y: Arr
    z: Arr
    lo: Arr
    hi: Arr

    def hits(self, box: tuple[Arr, Arr]) -> bool:
        return bool(np.all(box[0] <= self.hi) and np.all(box[1] >= self.lo))

    def ell(self, e: _Ell, pad: float = _CLAMP) -> Arr | None:
        return e.sdf(self.x, self.y, self.z) if self.hits(e.box(pad)) else None

    def tube(self, t: _Tube, pad: float = _CLAMP) -> Arr | None:
        if not self.hits(t.box(pad)):
            return None
        d: Arr | None = None
        for a, b, ra, rb in t.segments():
            box = (np.minimum(a, b) - max(ra, rb) - pad, np.maximum(a, b) + max(ra, rb) + pad)
            if self.hits(box):
                s = _seg_sdf(self.x, self.y, self.z, a, b, ra, rb)
                d = s if d is None else np.minimum(d, s)
        return None if d is None else np.minimum(d, _CLAMP)


@overload
def _union(d: Arr, e: Arr | None, k: float = 0.0) -> Arr: ...
@overload
def _union(d: Arr | None, e: Arr | None, k: float = 0.0) -> Arr | None: ...
def _union(d: Arr | None, e: Arr | None, k: float = 0.0) -> Arr | None:
    """Smooth union of two distances, either of which may be absent (far from the block)."""
    if e is None:
        return d
    if d is None:
        return e
    return _smin(d, e, k)


def _lt(d: Arr | None, t: float) -> Arr | bool:
    return False if d is None else d < t


def _profile(
    z: Arr, zs: Sequence[float], ys: Sequence[float], ks: Sequence[float]
) -> tuple[Arr, Arr]:
    return (
        np.interp(z, zs, ys).astype(np.float32),
        np.interp(z, zs, ks).astype(np.float32),
    )


def _height(
    x: Arr, z: Arr, zs: Sequence[float], ys: Sequence[float], ks: Sequence[float], k4: float
) -> tuple[Arr, Arr]:
    """Height field y = h(x, z) and its gradient norm factor sqrt(1 + h_x^2 + h_z^2)."""
    yc, k = _profile(z, zs, ys, ks)
    x2 = x * x
    h = yc - k * x2 - np.float32(k4) * x2 * x2
    yp, kp = _profile(z + 0.5, zs, ys, ks)
    ym, km = _profile(z - 0.5, zs, ys, ks)
    hz = (yp - ym) - (kp - km) * x2
    hx = -2.0 * k * x - 4.0 * np.float32(k4) * x2 * x
    return h, np.sqrt(1.0 + hx * hx + hz * hz).astype(np.float32)


def _nasal_bump(x: Arr, z: Arr) -> Arr:
    h = np.interp(z, (-22.0, -18.0, 5.0, 10.0), (0.0, 9.0, 2.0, 0.0)).astype(np.float32)
    return h * np.maximum(0.0, 1.0 - (x / 9.0) ** 2)


def _bone_front(b: _Block) -> tuple[Arr, Arr]:
    """Front of the facial skeleton y = B(x, z) (nasal bones included) and gradient factor."""
    h, g = _height(b.x, b.z, _B_Z, _B_Y, _B_K, _B_K4)
    return h + _nasal_bump(b.x, b.z), g


def _cavity(b: _Block) -> tuple[Arr, Arr]:
    """Signed distances of the cranial cavity: the ellipsoid alone and with its floor."""
    ell = _Ell(_CAV_C, _CAV_R).sdf(b.x, b.y, b.z)
    floor = np.interp(b.y, _FLOOR_Y, _FLOOR_Z).astype(np.float32)
    slope = np.float32(1.3)
    return ell, np.maximum(ell, (floor - b.z) / slope)


def _face_solid(b: _Block, s: Arr, gs: Arr) -> Arr:
    hf = (b.y - s) / gs
    lat = np.sqrt((b.x / 68.0) ** 2 + ((b.y + 5.0) / 92.0) ** 2) - 1.0
    d = np.maximum(hf, lat * 68.0)
    d = np.maximum(d, np.maximum(b.z - 15.0, -140.0 - b.z))
    d = np.maximum(d, -30.0 - b.y)
    return np.minimum(d, _CLAMP).astype(np.float32)


def _smax(a: Arr, b: Arr, k: float) -> Arr:
    return -_smin(-a, -b, k)


def _nose(b: _Block, pad: float) -> Arr | None:
    """Signed distance of the external nose (before the nostrils are cut), or None if far."""
    lo, hi = _NOSE_BOX
    if not b.hits((lo - pad, hi + pad)):
        return None
    (yn, zn), (yt, zt), (ys, zs) = _NASION, _TIP, _SUBNASALE
    dy, dz = yt - yn, zt - zn
    ln = math.hypot(dy, dz)
    ny, nz = -dz / ln, dy / ln  # dorsum normal (anterior-superior)
    dorsum = (b.y - yn) * ny + (b.z - zn) * nz
    beta = math.radians(_NOSE_SIDE_DEG)
    side = math.cos(beta) * (np.abs(b.x) - 2.0) + math.sin(beta) * dorsum
    by, bz = yt - ys, zt - zs
    lb = math.hypot(by, bz)
    base = (b.y - ys) * (bz / lb) - (b.z - zs) * (by / lb)  # below the columella line
    wedge = _smax(dorsum, side, 6.0)
    wedge = np.maximum(np.maximum(wedge, base), np.maximum(b.z - 10.0, 55.0 - b.y))
    d = _smin(wedge.astype(np.float32), _NOSE_TIP.sdf(b.x, b.y, b.z), 4.0)
    for e in _ALAE:
        d = _smin(d, e.sdf(b.x, b.y, b.z), 3.0)
    d = np.maximum(d, _NOSE_BASE_Z - b.z)
    return np.minimum(d, _CLAMP).astype(np.float32)


def _body(b: _Block, d_cav_ell: Arr) -> tuple[Arr, Arr]:
    """Signed distance of the body surface without and with the pinnae (template mm)."""
    d = np.minimum(d_cav_ell - (_SKULL_T + _SCALP_T), _CLAMP)
    if b.hits(_FACE_BOX):
        s, gs = _height(b.x, b.z, _S_Z, _S_Y, _S_K, _S_K4)
        d = _smin(d, _face_solid(b, s, gs), 8.0)
    neck_box = (np.array([-80.0, -100.0, -1e4]), np.array([80.0, 70.0, _NECK_TOP + _CLAMP]))
    if b.hits(neck_box):
        nx, ny = _NECK_R
        lat = np.sqrt((b.x / nx) ** 2 + ((b.y - _NECK_C[1]) / ny) ** 2) - 1.0
        neck = np.minimum(np.maximum(lat * nx, b.z - _NECK_TOP), _CLAMP)
        d = _smin(d, neck, 10.0)
    for e in (*_CHEEKS, *_BROWS, _CHIN):
        d = _union(d, b.ell(e), 4.0)
    lips = _union(b.ell(_LIPS[0]), b.ell(_LIPS[1]), 0.0)
    d = _union(d, lips, 3.0)
    nose = _nose(b, _CLAMP)
    if nose is not None:
        d = _union(d, nose, 3.0)
    for sign in (1.0, -1.0):
        lid = b.ell(_Ell((sign * _GLOBE_C[0], *_GLOBE_C[1:]), (_GLOBE_R + _LID_T,) * 3))
        if lid is not None:
            slit = np.maximum(
                np.maximum(
                    np.abs(b.z - _GLOBE_C[2]) - 3.5, np.abs(b.x - sign * _GLOBE_C[0]) - 12.0
                ),
                _GLOBE_C[1] + 8.0 - b.y,
            )
            d = _union(d, np.maximum(lid, -slit), 2.0)
    for n in _NOSTRILS:
        cut = b.ell(n) if isinstance(n, _Ell) else b.tube(n)
        if cut is not None:
            d = np.maximum(d, -cut)
    d_face = d
    for p, cc in zip(_PINNA, _CONCHA, strict=True):
        pin = b.ell(p)
        con = b.ell(cc)
        if pin is not None and con is not None:
            pin = np.maximum(pin, -con)
        d = _union(d, pin, 0.0)
    return d_face.astype(np.float32), d.astype(np.float32)


def _label_block(b: _Block, spec: PhantomSpec) -> tuple[Arr, Arr, Arr]:
    """Tissue labels, face mask and noise-free HU (float32) of the block's voxel centres."""
    T = Tissue
    n = b.x.shape[0]
    lab = np.zeros(n, np.uint8)
    d_cav_ell, d_cav = _cavity(b)
    d_face, d_body = _body(b, d_cav_ell)

    inside = d_body < 0
    lab[inside] = T.MUSCLE
    lab[inside & (d_body > -6.0)] = T.FAT
    lab[inside & (d_body > -2.0)] = T.SKIN
    deep = d_body < -2.0  # below the skin

    for e in _BUCCAL_FAT:
        lab[_lt(b.ell(e, 0.0), 0.0) & deep] = T.FAT

    in_face = b.hits(_FACE_BOX)
    if in_face:
        bf, gb = _bone_front(b)
        u = (bf - b.y) / gb  # depth behind the bone front along its normal, mm
    else:
        bf = np.full(n, -1e4, np.float32)
        u = np.full(n, 1e4, np.float32)

    # Nose cartilage: the inside of the external nose.
    nose_in = _nose(b, 0.0)
    if nose_in is not None:
        cart = (nose_in < -2.5) & (b.z > _NOSE_BASE_Z + 2.0) & (u < -2.0) & (d_body < -1.5)
        cart |= (np.abs(b.x) < 1.0) & (nose_in < 0.0) & (u < -1.0) & (d_body < -1.5)
        lab[cart] = T.CARTILAGE

    # Orbits: fat, globe, lens, optic nerve.
    for e in _ORBITS:
        lab[_lt(b.ell(e, 0.0), 0.0) & deep] = T.FAT
    for t in _OPTIC:
        lab[_lt(b.tube(t, 0.0), 0.0)] = T.MUSCLE
    for e in _GLOBES:
        lab[_lt(b.ell(e, 0.0), 0.0)] = T.EYE
    for e in _LENSES:
        lab[_lt(b.ell(e, 0.0), 0.0)] = T.LENS

    # Cranium: vault and skull base, diploe, CSF, brain, ventricles.
    shell = (d_cav >= 0.0) & (d_cav < _SKULL_T)
    lab[shell] = T.BONE
    lab[shell & (d_cav > 2.5) & (d_cav < 4.5)] = T.MARROW
    cav = d_cav < 0.0
    lab[cav] = T.BRAIN
    lab[cav & (d_cav > -2.5)] = T.CSF
    for e in _VENTRICLES:
        lab[_lt(b.ell(e, 0.0), 0.0) & cav] = T.CSF
    boss = _lt(b.ell(_FRONTAL_BOSS, 0.0), 0.0) & (d_cav >= 0.0) & (d_body < -4.0)
    lab[boss] = T.BONE
    lab[_lt(b.ell(_FRONTAL_SINUS, 0.0), 0.0) & (d_cav >= 0.0)] = T.AIRWAY

    # Facial skeleton: a band behind the bone front, with orbits and piriform aperture open.
    if in_face:
        xlim = np.interp(
            b.z, (-52.0, -40.0, -30.0, -10.0, 0.0, 14.0), (30.0, 40.0, 55.0, 60.0, 50.0, 45.0)
        )
        band = (u >= 0.0) & (u < 3.5) & (b.z > -52.0) & (b.z < 16.0) & (np.abs(b.x) < xlim)
        ox = np.abs(b.x) - 31.0
        orbit_hole = (ox / 18.0) ** 2 + ((b.z + 3.0) / 15.0) ** 2 < 1.0
        aperture = (b.x / 11.0) ** 2 + ((b.z + 32.0) / 15.0) ** 2 < 1.0
        band &= ~orbit_hole & ~aperture & (d_cav >= 0.0)
        lab[band] = T.BONE
        for e in _ORBITS:  # orbital walls behind the rims
            do = b.ell(e, 2.0)
            if do is not None:
                lab[(do >= 0.0) & (do < 1.5) & (u > 3.0) & (d_cav >= 0.0)] = T.BONE
        # Mandible: body along the bone front, cortical shell around marrow.
        zlow = -113.0 + 0.006 * b.x * b.x
        mand = (u >= 0.0) & (u < 10.0) & (b.z > zlow) & (b.z < -76.0) & (np.abs(b.x) < 52.0)
        mand &= b.y > -6.0
        lab[mand] = T.BONE
        marrow = mand & (u > 2.5) & (u < 7.5) & (b.z > zlow + 2.5) & (b.z < -78.5)
        lab[marrow] = T.MARROW
        # Teeth: upper and lower arches (crowns meet at z = -63.5).
        teeth = (u >= 0.0) & (u < 8.0) & (b.z > -76.0) & (b.z < -50.0) & (np.abs(b.x) < 30.0)
        teeth &= np.abs(b.z + 63.5) > 0.4
        lab[teeth] = T.TEETH
    for e in _RAMI:
        dr = b.ell(e, 0.0)
        lab[_lt(dr, 0.0)] = T.BONE
        lab[_lt(dr, -2.0)] = T.MARROW
    for t in (*_ZYG_ARCHES, _HYOID):
        lab[_lt(b.tube(t, 0.0), 0.0)] = T.BONE
    for e in _PETROUS:
        lab[_lt(b.ell(e, 0.0), 0.0)] = T.BONE
    dsp = b.tube(_SPINE, 0.0)
    lab[_lt(dsp, 0.0)] = T.BONE
    lab[_lt(dsp, -2.0)] = T.MARROW

    # Air spaces inside the body: sinuses (with walls), nasal cavity and septum, airway.
    for e in _MAX_SINUSES:
        ds = b.ell(e, 2.0)
        lab[_lt(ds, 1.5)] = T.BONE
        lab[_lt(ds, 0.0)] = T.AIRWAY
    dn = b.ell(_NASAL_CAVITY, 0.0)
    if dn is not None:
        lab[(dn < 0.0) & (u > 0.0)] = T.AIRWAY
        lab[(dn < 0.0) & (u > 0.0) & (np.abs(b.x) < 1.0)] = T.BONE
    lab[_lt(b.tube(_AIRWAY, 0.0), 0.0) & (u > 0.0)] = T.AIRWAY

    # Ears: pinnae outside the scalp, canals open to the air.
    scalp_d = d_cav_ell - (_SKULL_T + _SCALP_T)
    for p, cc, canal in zip(_PINNA, _CONCHA, _EAR_CANALS, strict=True):
        dp = b.ell(p, 0.0)
        if dp is not None:
            dc = b.ell(cc, 0.0)
            pin = dp < 0.0
            if dc is not None:
                pin &= dc >= 0.0
            lab[pin & (scalp_d > -1.0)] = T.EAR
        lab[_lt(b.tube(canal, 0.0), 0.0)] = T.AIR

    # Veins (before the arteries, which are drawn over them).
    for t in _VEINS:
        lab[_lt(b.tube(t, 0.0), 0.0)] = T.VEIN

    # Arteries: facial ones only through soft tissue; neck/intracranial ones through anything.
    soft = np.isin(lab, (T.SKIN, T.FAT, T.MUSCLE, T.CARTILAGE))
    for t, group in _ARTERIES:
        dv = b.tube(t, 0.0)
        if dv is None:
            continue
        lumen = dv < 0.0
        if group == "facial":
            lab[lumen & soft] = T.VESSEL_FACIAL
        else:
            lab[lumen & (d_cav < 0.0)] = T.VESSEL_INTRACRANIAL
            lab[lumen & (d_cav >= 0.0)] = T.VESSEL_NECK

    if spec.shell is not None:
        lab[_shell(b, d_body, spec.shell) & (lab == T.AIR)] = T.SHELL

    face = _face_mask(b, lab, bf, d_cav, d_face, spec)
    return lab, face, _block_hu(b, lab, d_cav, spec)


def _shell(b: _Block, d_body: Arr, sh: Shell) -> Arr:
    """Voxels of a shell/sheet: a layer at gap_mm..gap_mm+thickness_mm outside the body surface,
    over the front of the head, perforated by a 3D lattice of holes (the same on every block)."""
    layer = (d_body >= sh.gap_mm) & (d_body < sh.gap_mm + sh.thickness_mm)
    layer &= (b.y > sh.y_back) & (b.z > sh.z_low)
    if sh.period_mm > 0 and sh.hole > 0:
        w = np.float32(2.0 * math.pi / sh.period_mm)
        lattice = (np.cos(w * b.x) + np.cos(w * b.y) + np.cos(w * b.z)) / 3.0  # -1..1
        layer &= lattice < np.float32(1.0 - 2.0 * sh.hole)
    return layer


def _face_mask(b: _Block, lab: Arr, bf: Arr, d_cav: Arr, d_face: Arr, spec: PhantomSpec) -> Arr:
    """The face mask of docs/mask-definition.md on the block (see module docstring)."""
    lower = (b.z >= Z_HYOID) & (b.z <= Z_RIM) & (b.y > bf) & (b.y > Y_POST)
    # Above the rims the posterior limit ramps from Y_POST up to Y_FOREHEAD_POST over 20 mm.
    ramp = np.clip((b.z - Z_RIM) / 20.0, 0.0, 1.0)
    upper = (b.z > Z_RIM) & (b.z <= Z_FOREHEAD) & (d_cav > _SKULL_T)
    upper &= b.y > Y_POST + ramp * (Y_FOREHEAD_POST - Y_POST)
    upper &= np.abs(b.x) < X_FOREHEAD + (1.0 - ramp) * 40.0
    region = lower | upper
    allowed = np.isin(lab, np.array(sorted(MASKABLE), np.uint8))
    # Air (and a device in it) is only a candidate here, within a generous template distance of
    # the face; build() keeps the candidates within margin_mm (world, exact) of the body.
    reach = np.float32(_MARGIN_REACH * spec.margin_mm / min(spec.scale))
    air_ok = ~_outside_body(lab) | (d_face < reach)
    return region & allowed & air_ok


#: Air farther than this many margins from the face (template distance, which is approximate)
#: is not even a candidate for the mask's air margin.
_MARGIN_REACH = 3.0


def _outside_body(lab: Arr) -> Arr:
    """Air and devices lying in it (the air margin is measured from everything else)."""
    return (lab == Tissue.AIR) | (lab == Tissue.SHELL)


def _block_hu(b: _Block, lab: Arr, d_cav: Arr, spec: PhantomSpec) -> Arr:
    lut = np.array([TISSUE_HU[t] for t in Tissue], np.float32)
    for t in (Tissue.VESSEL_INTRACRANIAL, Tissue.VESSEL_NECK, Tissue.VESSEL_FACIAL):
        lut[t] = spec.vessel_hu
    lut[Tissue.VEIN] = spec.vein_hu
    if spec.shell is not None:
        lut[Tissue.SHELL] = spec.shell.hu
    hu = lut[lab]
    for st in spec.streaks:
        hu += _streak(b, st)
    grey = (lab == Tissue.BRAIN) & (d_cav > -7.0)
    hu[grey] = 40.0
    hu[(lab == Tissue.BRAIN) & ~grey] = 29.0
    return hu


def _streak(b: _Block, st: Streak) -> Arr:
    """HU added by one streak on the block (zero far from its plane)."""
    sx, sy, sz = st.source
    dz = b.z - np.float32(sz)
    out = np.zeros(b.x.shape, np.float32)
    near = np.abs(dz) < 4.0 * st.height_mm
    if not near.any():
        return out
    a = math.radians(st.angle_deg)
    px, py = b.x[near] - np.float32(sx), b.y[near] - np.float32(sy)
    across = -math.sin(a) * px + math.cos(a) * py
    r = np.sqrt(px * px + py * py)
    value = np.exp(-0.5 * (across / st.width_mm) ** 2 - 0.5 * (dz[near] / st.height_mm) ** 2)
    value *= np.exp(-r / st.length_mm)
    out[near] = (st.amplitude_hu * value).astype(np.float32)
    return out


# ---------------------------------------------------------------------------------------------
# Geometry: affines and pose.


def _rotation(deg: Vec3) -> Arr:
    """Rotation matrix of pitch (about x), roll (about y), yaw (about z), degrees: Rz Ry Rx."""
    ax, ay, az = (math.radians(v) for v in deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def spec_affine(spec: PhantomSpec) -> Arr:
    """The 4x4 voxel index -> world RAS+ mm affine of a spec (grid centre at world_center_mm)."""
    m = np.zeros((3, 3))
    for a in range(3):
        m[spec.axis_map[a], a] = (-1.0 if spec.flips[a] else 1.0) * spec.spacing[a]
    centre = (np.array(spec.shape, float) - 1.0) / 2.0
    aff = np.eye(4)
    aff[:3, :3] = m
    aff[:3, 3] = np.array(spec.world_center_mm) - m @ centre
    return aff


def head_to_world(spec: PhantomSpec) -> Arr:
    """4x4 head frame (template mm) -> world RAS+ mm: scale, rotate, then place fov_center_mm at
    the grid centre."""
    rs = _rotation(spec.rotation_deg) @ np.diag(spec.scale)
    out = np.eye(4)
    out[:3, :3] = rs
    out[:3, 3] = np.array(spec.world_center_mm) - rs @ np.array(spec.fov_center_mm)
    return out


# ---------------------------------------------------------------------------------------------
# Random specs.


def draw_spec(
    rng: np.random.Generator | int,
    *,
    shape: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
    max_tilt_deg: float = 20.0,
    scale_range: float = 0.12,
    spacing_range: tuple[float, float] = (0.5, 5.0),
    max_voxels: int = 4_000_000,
    storages: Sequence[str] = tuple(STORAGE),
    pad_prob: float = 0.3,
    random_order: bool = True,
    crop: bool = True,
    noise_range: tuple[float, float] = (5.0, 20.0),
    phase_probs: tuple[float, float, float] = (0.6, 0.25, 0.15),
    shell_prob: float = 0.2,
    sheet_prob: float = 0.1,
    streak_prob: float = 0.3,
) -> PhantomSpec:
    """Draw a :class:`PhantomSpec`.

    shape, spacing: per array axis (on-disk order); when one is None it is derived from a field
    of view of 200-260 mm in-plane and 180-300 mm axially (spacing drawn in spacing_range mm,
    coarsened until the volume has at most max_voxels). max_tilt_deg bounds each pose angle;
    scale_range the head size factor (1 +- scale_range per axis); crop moves the field of view so
    that the vertex or the lower neck is sometimes cut off; random_order draws the axis order and
    flips (else RAS). phase_probs: probabilities of the arterial, venous and no-contrast
    phases; shell_prob / sheet_prob: a perforated thermoplastic shell / a solid sheet over the
    face; streak_prob: dental streak artefacts. These are drawn after everything else, so the
    other fields of a seed's spec do not depend on them.
    """
    rng = np.random.default_rng(rng)
    if random_order:
        axis_map = tuple(int(v) for v in rng.permutation(3))
        flips = tuple(bool(v) for v in rng.random(3) < 0.5)
    else:
        axis_map, flips = (0, 1, 2), (False, False, False)
    fov_world = np.array([rng.uniform(200, 260), rng.uniform(200, 260), rng.uniform(180, 300)])
    fov = fov_world[list(axis_map)]  # per array axis
    lo_sp, hi_sp = spacing_range
    if spacing is None:
        sp_world = np.array(
            [rng.uniform(lo_sp, hi_sp * 0.6)] * 2 + [rng.uniform(lo_sp, hi_sp)]
        )  # in-plane square pixels, slices anywhere in range
        if rng.random() < 0.3:
            sp_world[:2] = rng.uniform(lo_sp, hi_sp, 2)  # fully anisotropic
        sp = sp_world[list(axis_map)]
        if shape is not None:
            sp = fov / np.array(shape, float)
    else:
        sp = np.array(spacing, float)
    if shape is None:
        sh = np.maximum(np.round(fov / sp), 8)
        while np.prod(sh) > max_voxels:
            sp = sp * 1.1
            sh = np.maximum(np.round(fov / sp), 8)
        shape_t = tuple(int(v) for v in sh)
    else:
        shape_t = tuple(int(v) for v in shape)
    spacing_t = tuple(float(v) for v in sp)
    scale = tuple(float(v) for v in 1.0 + rng.uniform(-scale_range, scale_range, 3))
    rot = tuple(float(v) for v in rng.uniform(-max_tilt_deg, max_tilt_deg, 3))
    ext_z = float(np.array(shape_t) @ (np.array(axis_map) == 2) * spacing_t[axis_map.index(2)])
    if crop:
        zc = min(118.0 - ext_z / 2.0 + rng.uniform(-30.0, 12.0), -5.0 + rng.uniform(-10.0, 10.0))
        zc = max(zc, -60.0)
        centre = (float(rng.normal(0, 5)), float(rng.uniform(-5, 15)), zc)
    else:
        centre = (0.0, 5.0, -5.0)
    world = tuple(float(v) for v in rng.uniform(-150, 150, 3))
    storage = str(storages[int(rng.integers(len(storages)))])
    pad: float | None = None
    if rng.random() < pad_prob:
        pad = float(rng.choice([-1024.0, -2048.0, -3024.0]))
        if STORAGE[storage][0] == "uint16":
            pad = -1024.0
    noise_sigma = float(rng.uniform(*noise_range))
    vessel_hu = float(rng.uniform(*PHASES["arterial"][0]))
    fov_radius_frac = float(rng.uniform(0.92, 1.0))
    noise_seed = int(rng.integers(2**31))
    phase = str(rng.choice(list(PHASES), p=np.asarray(phase_probs) / np.sum(phase_probs)))
    artery_range, vein_range = PHASES[phase]
    if phase != "arterial":
        vessel_hu = float(rng.uniform(*artery_range))
    vein_hu = float(rng.uniform(*vein_range))
    device = rng.random()
    shell: Shell | None = None
    if device < shell_prob + sheet_prob:
        solid = device >= shell_prob
        shell = Shell(
            gap_mm=float(rng.choice([0.0, rng.uniform(0.0, 2.0), rng.uniform(2.0, 7.0)])),
            thickness_mm=float(rng.uniform(0.8, 2.0) if solid else rng.uniform(1.2, 3.0)),
            hu=float(rng.uniform(-50.0, 150.0) if solid else rng.uniform(100.0, 300.0)),
            period_mm=0.0 if solid else float(rng.uniform(4.0, 9.0)),
            hole=0.0 if solid else float(rng.uniform(0.2, 0.55)),
            y_back=float(rng.uniform(-40.0, 20.0)),
            z_low=float(rng.uniform(-170.0, -60.0)),
        )
    streaks: list[Streak] = []
    if rng.random() < streak_prob:
        for _ in range(int(rng.integers(1, 4))):  # fillings on the dental arch
            x = float(rng.uniform(-28.0, 28.0))
            source = (x, 74.0 - 0.025 * x * x - float(rng.uniform(2.0, 6.0)),
                      -63.5 + float(rng.uniform(-7.0, 7.0)))  # fmt: skip
            for _ in range(int(rng.integers(3, 9))):
                streaks.append(
                    Streak(
                        source=source,
                        angle_deg=float(rng.uniform(0.0, 180.0)),
                        amplitude_hu=float(rng.choice([-1.0, 1.0]) * rng.uniform(200.0, 1200.0)),
                        width_mm=float(rng.uniform(0.7, 2.5)),
                        height_mm=float(rng.uniform(1.5, 5.0)),
                        length_mm=float(rng.uniform(40.0, 150.0)),
                    )
                )
    return PhantomSpec(
        shape=shape_t,  # type: ignore[arg-type]
        spacing=spacing_t,  # type: ignore[arg-type]
        axis_map=axis_map,  # type: ignore[arg-type]
        flips=flips,  # type: ignore[arg-type]
        scale=scale,  # type: ignore[arg-type]
        rotation_deg=rot,  # type: ignore[arg-type]
        fov_center_mm=centre,
        world_center_mm=world,  # type: ignore[arg-type]
        storage=storage,
        noise_sigma=noise_sigma,
        vessel_hu=vessel_hu,
        pad_value=pad,
        fov_radius_frac=fov_radius_frac,
        noise_seed=noise_seed,
        phase=phase,
        vein_hu=vein_hu,
        shell=shell,
        streaks=tuple(streaks),
    )


# ---------------------------------------------------------------------------------------------
# Building.

_BLOCK = 40


def make_phantom(spec_or_rng: PhantomSpec | np.random.Generator | int, **kw: object) -> Phantom:
    """Build a phantom from a spec, or draw one first from a seed or Generator.

    With a seed or Generator, ``kw`` goes to :func:`draw_spec` (e.g. ``shape=(64, 64, 64),
    spacing=(3.5, 3.5, 3.5)``); with a spec, ``kw`` replaces spec fields. Deterministic.
    """
    if isinstance(spec_or_rng, PhantomSpec):
        spec = dataclasses.replace(spec_or_rng, **kw) if kw else spec_or_rng  # type: ignore[arg-type]
    elif isinstance(spec_or_rng, (int, np.integer, np.random.Generator)):
        spec = draw_spec(spec_or_rng, **kw)  # type: ignore[arg-type]
    else:
        raise UsageError(
            f"phantom: expected a PhantomSpec, int or Generator, got {type(spec_or_rng)}"
        )
    return build(spec)


def build(spec: PhantomSpec) -> Phantom:
    """Evaluate the anatomy of ``spec`` on its grid, add noise and store it."""
    aff = spec_affine(spec)
    h2w = head_to_world(spec)
    idx2head = np.linalg.inv(h2w) @ aff  # voxel index -> template mm
    shape = spec.shape
    # Labels are evaluated on the grid grown by the air margin, so that the margin of a voxel
    # near the grid's edge sees the body beyond it (any window of a grid gives the same mask).
    pad = tuple(math.ceil(spec.margin_mm / s) + 1 for s in spec.spacing)
    inner = tuple(slice(p, p + n) for p, n in zip(pad, shape, strict=True))
    tissue_p = np.zeros(tuple(n + 2 * p for n, p in zip(shape, pad, strict=True)), np.uint8)
    face_p = np.zeros(tissue_p.shape, bool)
    hu = np.zeros(shape, np.float32)
    m = idx2head[:3, :3].astype(np.float32)
    o = idx2head[:3, 3].astype(np.float32)
    for i0 in range(-pad[0], shape[0] + pad[0], _BLOCK):
        for j0 in range(-pad[1], shape[1] + pad[1], _BLOCK):
            for k0 in range(-pad[2], shape[2] + pad[2], _BLOCK):
                sl = tuple(
                    slice(a0, min(a0 + _BLOCK, n + p))
                    for a0, n, p in zip((i0, j0, k0), shape, pad, strict=True)
                )
                ii, jj, kk = np.meshgrid(
                    *(np.arange(s.start, s.stop, dtype=np.float32) for s in sl), indexing="ij"
                )
                ii, jj, kk = ii.ravel(), jj.ravel(), kk.ravel()
                x = m[0, 0] * ii + m[0, 1] * jj + m[0, 2] * kk + o[0]
                y = m[1, 0] * ii + m[1, 1] * jj + m[1, 2] * kk + o[1]
                z = m[2, 0] * ii + m[2, 1] * jj + m[2, 2] * kk + o[2]
                corners = np.array(
                    [
                        [a, b_, c, 1.0]
                        for a in (sl[0].start, sl[0].stop - 1)
                        for b_ in (sl[1].start, sl[1].stop - 1)
                        for c in (sl[2].start, sl[2].stop - 1)
                    ]
                )
                ch = (idx2head @ corners.T)[:3]
                blk = _Block(x, y, z, ch.min(1), ch.max(1))
                lab, fc, h = _label_block(blk, spec)
                bshape = tuple(s.stop - s.start for s in sl)
                at = tuple(slice(s.start + p, s.stop + p) for s, p in zip(sl, pad, strict=True))
                tissue_p[at] = lab.reshape(bshape)
                face_p[at] = fc.reshape(bshape)
                src, dst = _overlap(sl, shape)
                if src is not None:
                    hu[dst] = h.reshape(bshape)[src]
    tissue = np.ascontiguousarray(tissue_p[inner])
    face = _exact_margin(face_p, tissue_p, spec)[inner]
    _add_noise(hu, spec)
    if spec.pad_value is not None:
        out = _outside_fov(spec)
        tissue[out] = Tissue.OUTSIDE_FOV
        face[out] = False
        hu[out] = spec.pad_value
    dtype, slope, inter = STORAGE[spec.storage]
    data = _store(hu, dtype, slope, inter)
    log.debug("phantom %s built: %d face voxels", spec.shape, int(face.sum()))
    return Phantom(data, slope, inter, aff, face, tissue, spec, h2w)


def _overlap(
    sl: tuple[slice, ...], shape: tuple[int, ...]
) -> tuple[tuple[slice, ...], tuple[slice, ...]] | tuple[None, None]:
    """The part of a block (index slices, possibly outside the grid) that lies on the grid:
    (slices into the block, slices into the grid), or (None, None)."""
    lo = [max(s.start, 0) for s in sl]
    hi = [min(s.stop, n) for s, n in zip(sl, shape, strict=True)]
    if any(a >= b for a, b in zip(lo, hi, strict=True)):
        return None, None
    src = tuple(slice(a - s.start, b - s.start) for a, b, s in zip(lo, hi, sl, strict=True))
    return src, tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))


def _exact_margin(candidates: Arr, tissue: Arr, spec: PhantomSpec) -> Arr:
    """The mask: its body part, and its air candidates that lie within ``spec.margin_mm`` (world
    mm, Euclidean, voxel centre to voxel centre) of the body. Distances are computed only in the
    box of the candidates grown by the margin."""
    outside = _outside_body(tissue)
    face = candidates & ~outside
    air = candidates & outside
    if not air.any():
        return face
    grow = [math.ceil(spec.margin_mm / s) + 1 for s in spec.spacing]
    box = tuple(
        slice(max(0, int(idx[0]) - g), min(n, int(idx[-1]) + g + 1))
        for idx, g, n in zip(occupied(air), grow, tissue.shape, strict=True)
    )
    dist = ndimage.distance_transform_edt(outside[box], sampling=spec.spacing)
    face[box] |= air[box] & (dist <= spec.margin_mm)
    return face


def _add_noise(hu: Arr, spec: PhantomSpec) -> None:
    rng = np.random.default_rng(spec.noise_seed)
    for i in range(hu.shape[0]):
        hu[i] += rng.standard_normal(hu.shape[1:], dtype=np.float32) * np.float32(spec.noise_sigma)


def _outside_fov(spec: PhantomSpec) -> Arr:
    """Voxels outside the circular axial field of view (circle in the world x-y plane)."""
    axes = [a for a in range(3) if spec.axis_map[a] != 2]
    half = [(spec.shape[a] - 1) / 2.0 for a in axes]
    rad = spec.fov_radius_frac * min(h * spec.spacing[a] for h, a in zip(half, axes, strict=True))
    grids = np.meshgrid(
        *[
            (np.arange(spec.shape[a]) - h) * spec.spacing[a]
            for h, a in zip(half, axes, strict=True)
        ],
        indexing="ij",
    )
    out2d = grids[0] ** 2 + grids[1] ** 2 > rad * rad
    kaxis = spec.axis_map.index(2)
    return np.broadcast_to(np.expand_dims(out2d, kaxis), spec.shape)


def _store(hu: Arr, dtype: str, slope: float, inter: float) -> Arr:
    vals = (hu - np.float32(inter)) / np.float32(slope)
    if dtype == "float32":
        return vals.astype(np.float32)
    info = np.iinfo(dtype)
    return np.clip(np.rint(vals), info.min, info.max).astype(dtype)


def trunk_section(seed: int) -> tuple[Arr, tuple[float, float, float]]:
    """A synthetic chest/abdomen section without a face: an elliptic body with a fat rim,
    organs, a spine, an aorta, sometimes lungs and arms, air around; random size, spacing
    (1-5 mm) and array order. Returns (HU float32, mm per array axis); at most 3 M voxels."""
    rng = np.random.default_rng(seed)
    sp = np.array([rng.uniform(1.0, 3.0)] * 2 + [rng.uniform(1.0, 5.0)])
    fov = np.array([rng.uniform(320, 480)] * 2 + [rng.uniform(100, 300)])
    shape = np.maximum(np.round(fov / sp).astype(int), 16)
    while np.prod(shape) > 3_000_000:
        sp *= 1.15
        shape = np.maximum(np.round(fov / sp).astype(int), 16)
    x = (np.arange(shape[0]) - shape[0] / 2) * sp[0]
    y = (np.arange(shape[1]) - shape[1] / 2) * sp[1]
    x, y = np.meshgrid(x, y, indexing="ij")
    ax, ay, fat = rng.uniform(120, 190), rng.uniform(80, 130), rng.uniform(5, 30)
    body = (x / ax) ** 2 + (y / ay) ** 2 < 1
    inner = (x / (ax - fat)) ** 2 + (y / (ay - fat)) ** 2 < 1
    sl = np.where(body, -100.0, -1000.0)
    sl[inner] = rng.uniform(30, 60)
    if rng.random() < 0.5:  # lungs
        for side in (-1, 1):
            lung = ((x - side * 0.45 * ax) / (0.35 * ax)) ** 2 + ((y + 0.05 * ay) / (0.6 * ay)) ** 2
            sl[lung < 1] = -850.0
    for _ in range(int(rng.integers(0, 4))):  # organs
        c = rng.uniform(-0.5, 0.5, 2) * (ax, ay)
        r = rng.uniform(15, 50, 2)
        sl[((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 < 1] = rng.uniform(-20, 200)
    sl[(x / 18) ** 2 + ((y + 0.65 * ay) / 16) ** 2 < 1] = rng.uniform(400, 1000)  # spine
    sl[((x - 20) / 12) ** 2 + ((y + 0.4 * ay) / 12) ** 2 < 1] = rng.uniform(40, 450)  # aorta
    if rng.random() < 0.4:  # arms
        for side in (-1, 1):
            arm = ((x - side * (ax + 40)) / 40) ** 2 + (y / 45) ** 2 < 1
            sl[arm] = 40.0
    hu = np.repeat(sl[:, :, None], shape[2], 2) + rng.normal(0, 10, tuple(shape))
    order = rng.permutation(3)
    hu = np.ascontiguousarray(hu.transpose(order)).astype(np.float32)
    return hu, (float(sp[order[0]]), float(sp[order[1]]), float(sp[order[2]]))
