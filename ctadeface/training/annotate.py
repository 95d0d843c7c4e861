"""Label the face mask of a head CT from anatomy alone (no model).

A deterministic annotator for ``docs/mask-definition.md``: it labels real CTs for training the
open model and is an independent check of any model. Steps (all lengths in mm, HU thresholds):

1. Resample the image (axes i, j, k as stored; ``affine`` maps voxel -> RAS+ mm) onto a world
   RAS grid of ``grid_mm``; values below -1024 HU (padding outside the field of view) become air.
2. Head pose: the mid-sagittal plane is the plane of best mirror symmetry of the bone (yaw and
   roll); pitch comes from the soft-tissue facial line (forehead -> chin), or forehead -> lips
   when the field of view ends above the chin.
3. Resample into the *head frame* (x to the subject's right, y anterior, z superior; x = 0 on
   the mid-sagittal plane). Per (x, z) column: the most anterior skin point and the most
   anterior bone point. The bone front is opened (drops vessels and streaks) and closed (bridges
   the orbits and the piriform aperture: the rim plane).
4. Landmarks: orbits (a pair of deep, walled holes of the bone front beside the midline), nose
   tip (largest protrusion of the skin height map near the midline, below the orbits when they
   are seen; a nose cut flat by the field of view is placed below them), orbital rims (top of
   the orbit holes), menton (lowest anterior mandible).
5. Region: in front of the bone front, from ``forehead_mm`` above the rims down to
   ``hyoid_below_menton_mm`` below the menton, and anterior to a coronal limit in front of the
   ears (``tragus_behind_tip_mm`` behind the nose tip, plus ``tragus_margin_mm``), at most
   ``max_depth_mm`` behind the skin front, down to at most ``hyoid_max_below_tip_mm`` below the
   nose tip; under the chin within ``submental_half_width_mm`` of the midline. The mask is
   the region within ``air_margin_mm`` of the skin (``air_margin_lateral_mm`` beside it; the main
   body, devices opened away; the air in front), brought back to the stored grid, minus voxels
   above ``bone_hu`` and padding outside the field of view (below ``pad_below_hu``, or a
   constant value around the round reconstruction field of view).

No face (no protruding nose near the midline, nor one cut flat by the field of view below the
orbits) gives an empty mask.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from ctadeface.body import largest_component
from ctadeface.hu import BODY_HU, BONE_HU, OUTSIDE_HU

log = logging.getLogger(__name__)

Arr = np.ndarray


@dataclass(frozen=True)
class AnnotateParams:
    """Tunable parameters of :func:`annotate_face` (lengths in mm, densities in HU)."""

    grid_mm: float = 2.0  # working grid spacing
    pose_grid_mm: float = 4.0  # grid of the symmetry (pose) search
    body_hu: float = BODY_HU  # body/skin threshold
    bone_front_hu: float = 300.0  # bone, on the working grid, for the bone front
    bone_hu: float = BONE_HU  # never masked at the stored resolution (vessels are 200-500 HU)
    pad_below_hu: float = -1100.0  # lower values are padding outside the field of view
    fov_roundness: float = 0.95  # a constant border around a region this round is padding
    air_margin_mm: float = 8.0  # air kept in front of the skin (>= 5 mm by definition; phantoms: 8)
    air_margin_lateral_mm: float = 8.0  # ... beside the skin (x direction), >= air_margin_mm
    vessel_open_mm: float = 8.0  # opening of the bone-front height map (vessels, streaks)
    front_allowance_mm: float = 2.0  # region reaches this far behind the blurred bone front
    hole_close_mm: float = 50.0  # closing of the bone front (orbits, piriform aperture)
    nose_open_mm: float = 50.0  # footprint of the skin top-hat that finds the nose
    nose_min_protrusion_mm: float = 8.0  # less than this: no face, empty mask
    max_head_width_mm: float = 230.0  # a nose sits on a body section narrower than this
    nose_depth_mm: tuple[float, float] = (8.0, 55.0)  # nose tip to the (closed) bone front
    midline_band_mm: float = 12.0  # the nose tip lies within this of the mid-sagittal plane
    max_tilt_deg: float = 30.0  # yaw/roll search range
    max_pitch_deg: float = 25.0  # a facial line tilted more than this is not trusted
    forehead_mm: float = 40.0  # mask top above the supraorbital rims
    rim_depth_mm: float = 4.0  # the orbit opening's edge: bone front recedes more than this
    rim_above_hole_max_mm: float = 10.0  # ... at most this far above the deep orbit hole
    rim_above_tip_mm: float = 47.0  # rims above the nose tip when the orbits are not seen
    orbit_depth_mm: float = 12.0  # bone-front hole deeper than this is an orbit/aperture
    orbit_max_depth_mm: float = 70.0  # an orbit is a cup: its back wall lies within this
    orbit_min_area_mm2: float = 150.0  # an orbit hole is at least this large (x-z area)
    orbit_max_skin_mm: float = 40.0  # the skin lies at most this far in front of the orbit's rim
    tip_below_orbits_mm: tuple[float, float] = (15.0, 65.0)  # the nose tip below the orbits' top
    cut_nose_min_depth_mm: float = 5.0  # a nose cut flat by the field of view: tissue this thick
    tip_plateau_mm: float = 10.0  # a flat top taller than this (z) is a tip cut by the FOV
    aperture_depth_mm: float = 25.0  # piriform aperture: the nasal cavity behind is this deep
    aperture_band_mm: float = 10.0  # piriform aperture: within this of the nose tip's x
    aperture_z_mm: tuple[float, float] = (10.0, 25.0)  # and this far below/above the tip
    cut_check_mm: float = 6.0  # no body this far below the lowest jaw bone: jaw cut by the FOV
    hyoid_below_menton_mm: float = 12.0  # mask bottom below the menton
    hyoid_below_tip_mm: float = 90.0  # mask bottom below the nose tip when no menton is seen
    hyoid_max_below_tip_mm: float = 110.0  # the mask bottom never lies lower than this
    submental_half_width_mm: float = 70.0  # below the menton: lateral limit (beyond the mandible)
    max_depth_mm: float = 35.0  # soft tissue deeper than this behind the skin front: not face
    mandible_behind_tip_mm: float = 55.0  # anterior mandible lies in front of tip - this
    submental_depth_mm: float = 38.0  # below the chin: depth behind the menton's bone front
    tragus_behind_tip_mm: float = 104.0  # tragus behind the nose tip (y) if the back is unseen
    tragus_fraction: float = 0.48  # else: lateral limit at this fraction of the head's depth
    tragus_depth_range_mm: tuple[float, float] = (90.0, 115.0)  # bounds of the tragus depth
    tragus_margin_mm: float = 10.0  # the lateral limit lies this far in front of the tragus
    forehead_post_extra_mm: float = 18.0  # forehead: posterior limit moves forward by this
    forehead_half_width_mm: float = 58.0  # forehead: lateral limit at the top
    facial_line_deg: float = 0.0  # angle of the nasion->chin skin line to the head's vertical
    lip_line_deg: float = 0.0  # the same for the forehead->lips line (used when no chin is seen)
    lip_range_mm: tuple[float, float] = (15.0, 45.0)  # the lips lie this far below the nose tip
    lip_seen_mm: float = 35.0  # ... and are seen when the profile reaches this far below the tip


@dataclass(frozen=True)
class FaceLandmarks:
    """Where the annotator found the face (world RAS+ mm; None when not found).

    frame: 3x3, columns = head x (right), y (anterior), z (superior) in world. yaw, roll, pitch:
    degrees. nose_tip etc.: world points. ``pogonion`` is the chin's point of the skin profile's
    front tangent, ``menton`` the lowest anterior point of the mandible (bone). ``lips`` and
    ``soft_chin`` lie :data:`SOFT_LANDMARK_INSET_MM` inside the skin of the mid-sagittal profile:
    the most anterior point of the lips (12-40 mm below the nose tip) and of the chin's soft
    tissue (up to 25 mm above the menton and 15 mm below the lips' point, or the pogonion when
    no menton is seen): soft-tissue points that a face mask must hold. z_rim, z_top, z_bottom,
    y_post: head-frame limits (mm, relative to the frame origin ``origin``, a world point on the
    mid-sagittal plane).
    """

    found: bool
    frame: Arr = field(default_factory=lambda: np.eye(3))
    origin: Arr = field(default_factory=lambda: np.zeros(3))
    yaw: float = 0.0
    roll: float = 0.0
    pitch: float = 0.0
    protrusion_mm: float = 0.0
    nose_tip: Arr | None = None
    nasion: Arr | None = None
    pogonion: Arr | None = None
    menton: Arr | None = None
    lips: Arr | None = None
    soft_chin: Arr | None = None
    orbits_seen: bool = False
    z_rim: float = math.nan
    z_top: float = math.nan
    z_bottom: float = math.nan
    y_post: float = math.nan


#: How far inside the skin (mm, posterior in the head frame) the soft-tissue landmarks lie.
SOFT_LANDMARK_INSET_MM = 2.0


def annotate_face(hu: Arr, affine: Arr, params: AnnotateParams | None = None) -> Arr:
    """The face mask of a head CT: bool, same shape and voxel order as ``hu``.

    hu: float HU, axes (i, j, k) as stored; affine: 4x4 voxel -> RAS+ mm. Empty when no face.
    """
    return annotate_face_landmarks(hu, affine, params)[0]


def annotate_face_landmarks(
    hu: Arr, affine: Arr, params: AnnotateParams | None = None
) -> tuple[Arr, FaceLandmarks]:
    """:func:`annotate_face` plus the landmarks it used (for debugging and pictures)."""
    p = params or AnnotateParams()
    hu = np.asarray(hu)
    aff = np.asarray(affine, float)
    empty = np.zeros(hu.shape, bool)
    if hu.ndim != 3 or min(hu.shape) < 2 or not np.all(np.isfinite(aff)):
        return empty, FaceLandmarks(False)
    if abs(np.linalg.det(aff[:3, :3])) < 1e-9:
        return empty, FaceLandmarks(False)
    world = _to_world_grid(hu, aff, p.grid_mm)
    if world is None:
        return empty, FaceLandmarks(False)
    head = _find_head(world, p)
    if head is None:
        return empty, FaceLandmarks(False)
    labels, landmarks, grid = head
    if labels is None or not landmarks.found:
        return empty, landmarks
    return _to_source((labels, landmarks, grid), hu, aff, p), landmarks


# ---------------------------------------------------------------------------------------------
# Grids.


@dataclass(frozen=True)
class _Grid:
    """A cubic grid: world = origin + axes @ (lo + spacing * index); axes columns are unit."""

    data: Arr
    origin: Arr  # world point of head-frame (0, 0, 0)
    axes: Arr  # 3x3, columns are the grid's x, y, z directions in world
    lo: Arr  # frame coordinates (mm) of index (0, 0, 0)
    spacing: float

    def coords(self, axis: int) -> Arr:
        return self.lo[axis] + self.spacing * np.arange(self.data.shape[axis])

    def to_world(self, frame_pts: Arr | Sequence[float]) -> Arr:
        return self.origin + np.asarray(frame_pts, float) @ self.axes.T


def _to_world_grid(hu: Arr, aff: Arr, g: float) -> _Grid | None:
    """Resample to an RAS grid of spacing g mm (linear, anti-aliased), padding -> -1024 HU."""
    src = np.maximum(hu.astype(np.float32, copy=False), np.float32(OUTSIDE_HU))
    if float(src.max()) <= BODY_HU or float(src.max()) - float(src.min()) < 200.0:
        return None
    spacing = np.sqrt((aff[:3, :3] ** 2).sum(0))
    size = [max(1, round(g / s)) for s in spacing]
    if max(size) > 1:
        src = ndi.uniform_filter(src, size=size, mode="nearest")
    n = np.array(hu.shape, float) - 1.0
    corners = np.array([[a, b, c] for a in (0, n[0]) for b in (0, n[1]) for c in (0, n[2])])
    cw = corners @ aff[:3, :3].T + aff[:3, 3]
    lo = cw.min(0)
    shape = tuple(int(v) for v in np.floor((cw.max(0) - lo) / g) + 1)
    inv = np.linalg.inv(aff)
    mat = inv[:3, :3] * g
    off = inv[:3, :3] @ lo + inv[:3, 3]
    # nearest at the border: the last slices keep their bone (no mixing with outside air)
    out = ndi.affine_transform(src, mat, off, output_shape=shape, order=1, mode="nearest")
    return _Grid(out, np.zeros(3), np.eye(3), lo, g)


def _resample(
    src: _Grid, origin: Arr, axes: Arr, lo: Arr, shape: tuple[int, ...], g: float, order: int = 1
) -> _Grid:
    """Resample a grid into another (origin/axes/lo as in :class:`_Grid`)."""
    # src index = (src.axes.T @ (world - src.origin) - src.lo) / src.spacing
    # world = origin + axes @ (lo + g * q)
    r = src.axes.T @ axes
    mat = r * (g / src.spacing)
    off = (src.axes.T @ (origin - src.origin) + r @ lo - src.lo) / src.spacing
    out = ndi.affine_transform(src.data, mat, off, output_shape=shape, order=order, cval=OUTSIDE_HU)
    return _Grid(out, origin, axes, lo, g)


def _rot(yaw: float, roll: float, pitch: float) -> Arr:
    """Head frame -> world rotation Rz(yaw) Ry(roll) Rx(pitch), degrees (as phantom.py)."""
    ax, ay, az = (math.radians(v) for v in (pitch, roll, yaw))
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _disk(diam_mm: float, g: float) -> Arr:
    r = max(1, round(diam_mm / (2.0 * g)))
    a = np.arange(-r, r + 1)
    return (a[:, None] ** 2 + a[None, :] ** 2) <= r * r


# ---------------------------------------------------------------------------------------------
# Pose.


def _body_and_bone(w: _Grid, p: AnnotateParams) -> tuple[_Grid, Arr, Arr] | None:
    """Pose grid, main body component and its bone."""
    f = p.pose_grid_mm / w.spacing
    shape = tuple(max(1, int(n / f)) for n in w.data.shape)
    coarse = _resample(w, w.origin, w.axes, w.lo, shape, p.pose_grid_mm)
    body = ndi.binary_opening(coarse.data > p.body_hu, iterations=1)
    if body.sum() < 50:
        return None
    body = largest_component(body)
    body = ndi.binary_dilation(body, iterations=1) & (coarse.data > p.body_hu)
    bone = (coarse.data > p.bone_front_hu) & ndi.binary_dilation(body, iterations=1)
    return coarse, body, bone


def _symmetry(c: _Grid, bone: Arr, p: AnnotateParams) -> tuple[float, float, Arr]:
    """Yaw, roll (degrees) and a world point of the plane of best mirror symmetry of bone."""
    idx = np.argwhere(bone)
    if len(idx) < 30:
        return 0.0, 0.0, c.to_world(c.lo + c.spacing * np.argwhere(np.ones(bone.shape)).mean(0))
    step = max(1, len(idx) // 6000)
    pts = c.to_world(c.lo + c.spacing * idx[::step].astype(float))
    dist = ndi.distance_transform_edt(~bone) * c.spacing
    dist = np.minimum(dist, 20.0).astype(np.float32)
    centre = pts.mean(0)

    def cost(yaw: float, roll: float, offs: Arr) -> Arr:
        n = _rot(yaw, roll, 0.0)[:, 0]
        d = (pts - centre) @ n
        out = np.empty(len(offs))
        for k, o in enumerate(offs):
            refl = pts - 2.0 * (d - o)[:, None] * n[None, :]
            q = (refl - c.lo) / c.spacing
            out[k] = ndi.map_coordinates(dist, q.T, order=1, mode="nearest").mean()
        return out

    best = (math.inf, 0.0, 0.0, 0.0)
    t = p.max_tilt_deg
    for yaw in np.arange(-t, t + 1e-6, 5.0):
        for roll in np.arange(-t, t + 1e-6, 5.0):
            offs = np.arange(-20.0, 20.1, 4.0)
            cs = cost(yaw, roll, offs)
            k = int(np.argmin(cs))
            if cs[k] < best[0]:
                best = (float(cs[k]), float(yaw), float(roll), float(offs[k]))
    for dstep, ostep in ((2.0, 2.0), (0.7, 0.7)):
        _, y0, r0, o0 = best
        for yaw in y0 + dstep * np.arange(-2, 3):
            for roll in r0 + dstep * np.arange(-2, 3):
                offs = o0 + ostep * np.arange(-3, 4)
                cs = cost(yaw, roll, offs)
                k = int(np.argmin(cs))
                if cs[k] < best[0]:
                    best = (float(cs[k]), float(yaw), float(roll), float(offs[k]))
    _, yaw, roll, off = best
    n = _rot(yaw, roll, 0.0)[:, 0]
    return yaw, roll, centre + off * n


# ---------------------------------------------------------------------------------------------
# Face.


@dataclass(frozen=True)
class _Maps:
    """Per (x, z) column of a head grid: most anterior skin and bone y (mm; nan if none); and
    the body itself (bool, on the head grid: devices, thin sheets and the table opened away)."""

    skin: Arr
    bone: Arr
    body: Arr


def _front(mask: Arr, ys: Arr) -> Arr:
    """Most anterior y (mm) of mask along axis 1, nan where the column is empty."""
    any_ = mask.any(1)
    last = mask.shape[1] - 1 - np.argmax(mask[:, ::-1, :], axis=1)
    return np.where(any_, ys[last], np.nan)


def _maps(h: _Grid, p: AnnotateParams) -> _Maps:
    """Skin of the main body (thin sheets, shells and the table opened away) and bone."""
    ys = h.coords(1)
    body = ndi.binary_opening(h.data > p.body_hu, structure=ndi.generate_binary_structure(3, 1))
    body = largest_component(body)
    return _Maps(_front(body, ys), _front(h.data > p.bone_front_hu, ys), body)


def _fill(a: Arr, value: float) -> Arr:
    return np.where(np.isfinite(a), a, value)


def _bone_front(m: _Maps, h: _Grid, p: AnnotateParams) -> tuple[Arr, Arr]:
    """Bone front y (mm) per column: raw (nan -> grid start) and opened-then-closed."""
    b0 = _fill(m.bone, float(h.coords(1)[0]))
    bo = ndi.grey_opening(b0, footprint=_disk(p.vessel_open_mm, h.spacing))
    return bo, ndi.grey_closing(bo, footprint=_disk(p.hole_close_mm, h.spacing))


def _orbits_top(h: _Grid, m: _Maps, fronts: tuple[Arr, Arr], p: AnnotateParams) -> float | None:
    """Top z (mm) of the orbits, found without the nose: a pair of deep holes of the bone front
    (depth at least ``orbit_depth_mm``, at least ``orbit_min_area_mm2`` each) on either side of
    the midline at the same height, under the skin of the face (skin at most
    ``orbit_max_skin_mm`` in front of the rim plane) and whose back wall (the orbital walls)
    lies within ``orbit_max_depth_mm`` of the rim plane; None when no such pair is seen.

    Other holes of the closed bone front open onto nothing or lie at the back (the vertex,
    under the zygoma, a thin frontal bone): their back lies far behind or the skin is not in
    front of them. The largest pair wins.
    """
    bo, bf = fronts
    xs, zs = h.coords(0), h.coords(2)
    depth = bf - bo
    ax = np.abs(xs)[:, None]
    lab, n = ndi.label((depth > p.orbit_depth_mm) & (ax > 12.0) & (ax < 55.0))
    if n == 0:
        return None
    ids = np.arange(1, n + 1)
    area = ndi.sum_labels(np.ones_like(depth), lab, ids) * h.spacing**2
    med = np.asarray(ndi.median(depth, lab, ids), float)
    # skin in front of the rim plane, where the orbital walls are seen behind it (nan: none)
    cover = np.where(np.isfinite(m.bone), m.skin - bf, np.nan)
    cover_ok = np.isfinite(cover) & (cover >= 0.0) & (cover <= p.orbit_max_skin_mm)
    covered = np.asarray(ndi.mean(cover_ok.astype(float), lab, ids), float)
    xc = np.asarray(ndi.mean(np.broadcast_to(xs[:, None], lab.shape), lab, ids), float)
    zz = np.broadcast_to(zs[None, :], lab.shape)
    z_lo = np.asarray(ndi.minimum(zz, lab, ids), float)
    z_hi = np.asarray(ndi.maximum(zz, lab, ids), float)
    ok = (area >= p.orbit_min_area_mm2) & (med <= p.orbit_max_depth_mm) & (covered >= 0.9)
    best: tuple[float, float] | None = None
    for r in np.flatnonzero(ok & (xc > 0)):
        for q in np.flatnonzero(ok & (xc < 0)):
            if min(z_hi[r], z_hi[q]) < max(z_lo[r], z_lo[q]):
                continue  # not at the same height
            pair = (float(area[r] + area[q]), 0.5 * float(z_hi[r] + z_hi[q]))
            if best is None or pair[0] > best[0]:
                best = pair
    return None if best is None else best[1]


def _nose_tip(
    h: _Grid, m: _Maps, fronts: tuple[Arr, Arr], z_orbits: float | None, p: AnnotateParams
) -> tuple[int, int, float] | None:
    """Index (ix, iz) of the nose tip and its protrusion (mm), or None.

    The tip is the most anterior point of a protrusion of the skin height map near the midline
    that is narrow, on a head-sized body section and has the facial skeleton close behind it.
    When the orbits are seen (top at ``z_orbits`` mm), it lies ``tip_below_orbits_mm`` below
    them: the chin, which protrudes as much when the nose is cut by the field of view or the
    head is tilted back, lies lower. A tip cut flat by the field of view is a plateau: its
    point nearest the expected height is the tip.
    Points with the piriform aperture behind them are preferred (a hole of the bone front deeper
    than ``aperture_depth_mm``: the nasal cavity, within ``aperture_band_mm`` in x and
    ``aperture_z_mm`` below/above the point): the chin of a head tilted back can protrude as
    far as the nose, and touch it in one protrusion, but it has the solid mandible behind it.
    """
    bo, bf = fronts
    valid = np.isfinite(m.skin)
    if not valid.any():
        return None
    s = _fill(m.skin, 1e6)
    fp = _disk(p.nose_open_mm, h.spacing)
    # opening that ignores empty columns (no protrusion at the edge of the body or the grid)
    top = np.where(valid, s - ndi.grey_dilation(ndi.grey_erosion(s, footprint=fp), footprint=fp), 0)
    xs, zs = h.coords(0), h.coords(2)
    band = np.abs(xs) <= p.midline_band_mm / 2.0
    top[~band, :] = 0.0
    z_exp = math.nan
    if z_orbits is not None:
        lo, hi = p.tip_below_orbits_mm
        top[:, (zs < z_orbits - hi) | (zs > z_orbits - lo)] = 0.0
        z_exp = z_orbits - 0.5 * (lo + hi)
    lab, n = ndi.label(top >= p.nose_min_protrusion_mm)
    if n == 0:
        return _cut_nose(h, m, bf, top, z_exp, p)
    hole = (bf - bo) > p.aperture_depth_mm
    peaks = np.asarray(ndi.maximum(top, lab, np.arange(1, n + 1)), float)
    cands = []
    for c in range(n):
        comp = lab == c + 1
        # a chin and a nose may touch: keep the rows with the aperture behind them, if any
        rows = _aperture_rows(hole, xs, zs, comp, p)
        if (comp & rows[None, :]).any():
            comp &= rows[None, :]
        ix, iz = _plateau_point(np.where(comp & valid, s, -np.inf), xs, zs, z_exp, p)
        cands.append((ix, iz, float(peaks[c]), float(s[ix, iz]), bool(rows[iz])))
    if math.isfinite(z_exp):
        # below the orbits the nose is the most anterior protrusion; a plateau cut by the field
        # of view (equally anterior candidates): the one nearest the expected height
        y_top = max(cd[3] for cd in cands)
        cands.sort(key=lambda cd: (cd[3] < y_top - 2.0 * h.spacing, abs(zs[cd[1]] - z_exp)))
    else:
        cands = [cands[int(c)] for c in np.argsort(-peaks)]
    first: tuple[int, int, float] | None = None
    for ix, iz, peak, y_tip, aperture in cands:
        cols = np.flatnonzero(valid[:, iz])
        width = float(xs[cols[-1]] - xs[cols[0]])
        depth = y_tip - float(bf[ix, iz])
        if width > p.max_head_width_mm or not p.nose_depth_mm[0] <= depth <= p.nose_depth_mm[1]:
            log.debug("nose candidate rejected: width %.0f mm, depth %.0f mm", width, depth)
            continue
        if aperture:
            return int(ix), int(iz), peak
        log.debug("nose candidate without an aperture behind it at z %.0f mm", zs[iz])
        first = first or (int(ix), int(iz), peak)
    return first or _cut_nose(h, m, bf, top, z_exp, p)


def _cut_nose(
    h: _Grid, m: _Maps, bf: Arr, top: Arr, z_exp: float, p: AnnotateParams
) -> tuple[int, int, float] | None:
    """The nose tip of a face cut flat by the field of view (no protrusion left), placed at
    ``z_exp`` (mm, below the orbits): the most anterior skin near the midline there, if the
    soft tissue in front of the bone front is at least ``cut_nose_min_depth_mm`` thick (a
    defaced head has none); None otherwise or without the orbits (``z_exp`` nan)."""
    if not math.isfinite(z_exp):
        return None
    xs, zs = h.coords(0), h.coords(2)
    sel = (np.abs(xs) <= p.midline_band_mm / 2.0)[:, None] & (np.abs(zs - z_exp) <= h.spacing)
    sk = np.where(sel & np.isfinite(m.skin), m.skin, -np.inf)
    if not np.isfinite(sk).any():
        return None
    ix, iz = np.unravel_index(int(np.argmax(sk)), sk.shape)
    cols = np.flatnonzero(np.isfinite(m.skin[:, iz]))
    if float(xs[cols[-1]] - xs[cols[0]]) > p.max_head_width_mm:
        return None
    if not p.cut_nose_min_depth_mm <= float(sk[ix, iz] - bf[ix, iz]) <= p.nose_depth_mm[1]:
        return None
    log.debug("no protruding nose below the orbits: a face cut by the field of view")
    return int(ix), int(iz), float(top[ix, iz])


def _plateau_point(sk: Arr, xs: Arr, zs: Arr, z_exp: float, p: AnnotateParams) -> tuple[int, int]:
    """(ix, iz) of the most anterior point of the height map ``sk`` (-inf outside). With an
    expected height ``z_exp`` (mm; below the orbits), of the points within 1 mm of the maximum
    the one nearest the midline (then the lowest); when they span more than ``tip_plateau_mm``
    in z (a tip cut flat by the field of view), the one nearest the midline at ``z_exp``."""
    if not math.isfinite(z_exp):
        ix, iz = np.unravel_index(int(np.argmax(sk)), sk.shape)
        return int(ix), int(iz)
    pts = np.argwhere(sk >= float(sk.max()) - 1.0)
    z = zs[pts[:, 1]]
    dz = np.abs(z - z_exp) if float(z.max() - z.min()) > p.tip_plateau_mm else 1e-3 * pts[:, 1]
    k = int(np.argmin(np.abs(xs[pts[:, 0]]) + dz))
    return int(pts[k, 0]), int(pts[k, 1])


def _aperture_rows(hole: Arr, xs: Arr, zs: Arr, comp: Arr, p: AnnotateParams) -> Arr:
    """Per z row: True where a nose tip there would have a bone-front hole (the piriform
    aperture) within ``aperture_band_mm`` of the component's x and ``aperture_z_mm``
    below/above it."""
    below, above = p.aperture_z_mm
    cx = xs[comp.any(1)]
    band = (xs >= cx.min() - p.aperture_band_mm) & (xs <= cx.max() + p.aperture_band_mm)
    hz = zs[hole[band].any(0)]
    if len(hz) == 0:
        return np.zeros(len(zs), bool)
    return ((hz[None, :] >= zs[:, None] - below) & (hz[None, :] <= zs[:, None] + above)).any(1)


def _profile(m: _Maps, h: _Grid, p: AnnotateParams) -> Arr | None:
    xs = h.coords(0)
    band = np.abs(xs) <= max(h.spacing, 4.0)
    if not band.any():
        return None
    return np.fmax.reduce(np.where(band[:, None], m.skin, np.nan), axis=0)


def _soft_landmarks(
    prof: Arr | None, zs: Arr, z_tip: float, z_men: float, pog: tuple[float, float] | None
) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
    """(y, z) head-frame mm of the lips' and the chin's most anterior skin points of the
    mid-sagittal profile ``prof`` (skin y per z), moved :data:`SOFT_LANDMARK_INSET_MM` into the
    tissue; None where that part of the profile is not seen."""
    if prof is None:
        return None, None
    skin: Arr = prof

    def front(lo: float, hi: float) -> tuple[float, float] | None:
        rows = np.flatnonzero(np.isfinite(skin) & (zs >= lo) & (zs <= hi))
        if len(rows) < 3:
            return None
        k = rows[np.argmax(skin[rows])]
        return float(skin[k]) - SOFT_LANDMARK_INSET_MM, float(zs[k])

    lips = front(z_tip - 40.0, z_tip - 12.0)
    if math.isfinite(z_men):
        # the chin's soft tissue above the menton, at least 15 mm below the lips' front
        chin = front(z_men, min(z_men + 25.0, z_tip - 55.0 if lips is None else lips[1] - 15.0))
    else:
        chin = None if pog is None else (pog[0] - SOFT_LANDMARK_INSET_MM, pog[1])
    return lips, chin


def _facial_line(
    h: _Grid, m: _Maps, tip: tuple[int, int, float], p: AnnotateParams
) -> tuple[tuple[float, float], tuple[float, float], bool] | None:
    """Forehead and lower points (y, z; frame mm) of the skin profile's front tangent (the line
    that touches the forehead and the chin from the front), and True when the lower point is on
    the chin. When the chin is not seen (the field of view ends above it), the tangent touches
    the lips instead (False); None when neither is seen."""
    prof = _profile(m, h, p)
    if prof is None:
        return None
    zs = h.coords(2)
    z_tip = zs[tip[1]]
    ok = np.isfinite(prof)
    up = np.flatnonzero(ok & (zs > z_tip + 44.0) & (zs < z_tip + 80.0))
    if len(up) < 3 or zs[up].max() < z_tip + 56.0:
        return None
    dn = np.flatnonzero(ok & (zs < z_tip - 45.0) & (zs > z_tip - 95.0))
    chin = len(dn) >= 3 and zs[dn].min() <= z_tip - 75.0
    if not chin:
        lo, hi = p.lip_range_mm
        dn = np.flatnonzero(ok & (zs < z_tip - lo) & (zs > z_tip - hi))
        if len(dn) < 3 or zs[dn].min() > z_tip - p.lip_seen_mm:
            return None
    pts = np.concatenate([up, dn])
    best: tuple[int, int] | None = None
    for i in up:
        for j in dn:
            # line through (prof[i], zs[i]) and (prof[j], zs[j]); all points behind it
            t = (zs[pts] - zs[j]) / (zs[i] - zs[j])
            yl = prof[j] + t * (prof[i] - prof[j])
            if np.all(prof[pts] <= yl + 1e-6):
                best = (int(i), int(j))
                break
        if best is not None:
            break
    if best is None:
        return None
    top, low = best
    return (float(prof[top]), float(zs[top])), (float(prof[low]), float(zs[low])), chin


def _tragus_depth(
    h: _Grid, xs: Arr, zs: Arr, x_tip: float, y_tip: float, z_tip: float, p: AnnotateParams
) -> float:
    """How far (mm, along y) the tragus lies behind the nose tip: a fraction of the head's
    depth at the level of the ears, within bounds; the default when the back is not seen."""
    kx = np.flatnonzero(np.abs(xs - x_tip) <= 10.0)
    kz = np.flatnonzero((zs > z_tip + 10.0) & (zs < z_tip + 30.0))
    if len(kx) == 0 or len(kz) == 0:
        return p.tragus_behind_tip_mm
    sub = h.data[kx[0] : kx[-1] + 1, :, kz[0] : kz[-1] + 1] > p.body_hu
    sub = largest_component(ndi.binary_opening(sub, iterations=1))
    if not sub.any():
        return p.tragus_behind_tip_mm
    ys = h.coords(1)
    back = float(np.median(ys[np.argwhere(sub)[:, 1]].min()))
    if back <= ys[0] + 2.0 * h.spacing:  # the back of the head is cut off
        return p.tragus_behind_tip_mm
    lo, hi = p.tragus_depth_range_mm
    return float(np.clip(p.tragus_fraction * (y_tip - back) + p.tragus_margin_mm, lo, hi))


def _menton(
    xs: Arr, zs: Arr, b0: Arr, x_tip: float, y_tip: float, z_tip: float, p: AnnotateParams
) -> tuple[float, float]:
    """(z, y) of the lowest point of the anterior mandible at the midline, or nan."""
    band = np.abs(xs - x_tip) <= 8.0
    prof = np.fmax.reduce(np.where(band[:, None], b0, np.nan), axis=0)
    rows = [k for k in np.argsort(-zs) if zs[k] < z_tip - 25.0]
    last_z, last_y = math.nan, math.nan
    for k in rows:
        z, y = float(zs[k]), float(prof[k])
        if not math.isfinite(last_z):
            if z < z_tip - 60.0:
                break
            if math.isfinite(y) and y > y_tip - p.mandible_behind_tip_mm:
                last_z, last_y = z, y
            continue
        if math.isfinite(y) and y > last_y - 20.0:
            last_z, last_y = z, max(y, last_y - 4.0)
        elif z < last_z - 10.0:
            break
    if not math.isfinite(last_z) or last_z > z_tip - 45.0:
        return math.nan, math.nan
    return last_z, last_y


def _cut_below(skin: Arr, xs: Arr, zs: Arr, x_tip: float, z: float, p: AnnotateParams) -> bool:
    """True when no body lies in the midline band within ``cut_check_mm`` below z (mm): the
    field of view ends there (a real menton has the submental soft tissue below it)."""
    band = np.abs(xs - x_tip) <= 8.0
    rows = (zs < z) & (zs >= z - p.cut_check_mm)
    if not rows.any():
        return True
    return not bool(np.isfinite(skin[np.ix_(band, rows)]).any())


def _head_grid(w: _Grid, body_pts: Arr, origin: Arr, axes: Arr, g: float) -> _Grid:
    fr = (body_pts - origin) @ axes
    lo = np.floor((fr.min(0) - 16.0) / g) * g
    hi = fr.max(0) + 16.0
    shape = tuple(int(v) for v in np.floor((hi - lo) / g) + 1)
    return _resample(w, origin, axes, lo, shape, g)


def _find_head(w: _Grid, p: AnnotateParams) -> tuple[Arr | None, FaceLandmarks, _Grid] | None:
    bb = _body_and_bone(w, p)
    if bb is None:
        return None
    c, body, bone = bb
    yaw, roll, origin = _symmetry(c, bone, p)
    body_pts = c.to_world(c.lo + c.spacing * np.argwhere(body).astype(float))
    pitch = 0.0
    nasion = pog = None
    found = None
    for _ in range(3):
        axes = _rot(yaw, roll, pitch)
        h = _head_grid(w, body_pts, origin, axes, p.grid_mm)
        m = _maps(h, p)
        bo, bf = _bone_front(m, h, p)
        z_orb = _orbits_top(h, m, (bo, bf), p)
        tip = _nose_tip(h, m, (bo, bf), z_orb, p)
        if tip is None:
            if found is None:
                log.debug("no nose found: empty mask")
                return None, FaceLandmarks(False, axes, origin, yaw, roll, pitch), h
            log.debug("no nose found at pitch %.0f deg: keeping the previous pose", pitch)
            break
        found = (h, m, (bo, bf), tip, pitch)
        line = _facial_line(h, m, tip, p)
        xs, zs = h.coords(0), h.coords(2)
        log.debug(
            "pitch %.1f deg: nose tip x %.0f z %.0f mm (orbits' top %s), facial line %s",
            *(pitch, xs[tip[0]], zs[tip[1]], z_orb, line),
        )
        if line is None:
            break
        nasion, low, chin = line
        pog = low if chin else None
        theta = math.degrees(math.atan2(nasion[0] - low[0], nasion[1] - low[1]))
        dp = -(theta - (p.facial_line_deg if chin else p.lip_line_deg))
        if abs(dp) < 1.5 or abs(pitch + dp) > p.max_pitch_deg:
            break
        pitch += dp
    assert found is not None  # the first pass returns or sets it
    h, m, fronts, tip, pitch = found
    return _face_mask(h, m, fronts, tip, (nasion, pog), (yaw, roll, pitch), p)


def _face_mask(
    h: _Grid,
    m: _Maps,
    fronts: tuple[Arr, Arr],
    tip: tuple[int, int, float],
    line: tuple[tuple[float, float] | None, tuple[float, float] | None],
    pose: tuple[float, float, float],
    p: AnnotateParams,
) -> tuple[Arr, FaceLandmarks, _Grid]:
    g = h.spacing
    xs, ys, zs = h.coords(0), h.coords(1), h.coords(2)
    ix, iz, protrusion = tip
    x_tip, z_tip = float(xs[ix]), float(zs[iz])
    y_tip = float(m.skin[ix, iz])
    # bone front: thin bright things dropped, orbits and aperture bridged (the rim plane)
    b0 = _fill(m.bone, float(ys[0]))
    bo, bf = fronts
    # orbits: deep holes of the bone front beside the midline, above the tip
    hole = (bf - bo) > p.orbit_depth_mm
    zz = zs[None, :]
    xx = np.abs(xs)[:, None]
    box = (xx > 12.0) & (xx < 55.0) & (zz > z_tip + 10.0) & (zz < z_tip + 75.0)
    lab, _ = ndi.label(hole & box)
    # the rim is the upper edge of the orbit opening, where the bone front starts to recede: the
    # orbital roof slopes back behind it, so the deep part of the hole begins a little lower
    shallow, _ = ndi.label(((bf - bo) > p.rim_depth_mm) & box)
    z_rims = []
    for side in (1.0, -1.0):
        sel = (lab > 0) & (np.sign(xs)[:, None] == side)
        if sel.sum() * g * g >= 150.0:
            ids = np.bincount(lab[sel])
            big = lab == int(np.argmax(ids))
            z_deep = float(zs[np.flatnonzero(big.any(0)).max()])
            edge = np.isin(shallow, np.unique(shallow[big]))
            z_edge = float(zs[np.flatnonzero(edge.any(0)).max()])
            z_rims.append(min(z_edge, z_deep + p.rim_above_hole_max_mm))
            log.debug("orbit %+.0f: edge z %.0f mm, deep hole top z %.0f mm", side, z_edge, z_deep)
    orbits_seen = len(z_rims) > 0
    z_rim = float(np.mean(z_rims)) if orbits_seen else z_tip + p.rim_above_tip_mm
    z_top = z_rim + p.forehead_mm
    # menton: follow the anterior bone front of the midline down from the upper jaw
    z_men, y_men = _menton(xs, zs, b0, x_tip, y_tip, z_tip, p)
    if math.isfinite(z_men) and _cut_below(m.skin, xs, zs, x_tip, z_men, p):
        # the field of view ends at the jaw: the lowest bone seen is not the menton
        log.debug("mandible cut by the field of view at z %.0f mm", z_men)
        z_men, y_men = math.nan, math.nan
    if math.isfinite(z_men):
        z_bot = z_men - p.hyoid_below_menton_mm
    else:
        y_men = y_tip - p.mandible_behind_tip_mm
        z_bot = z_tip - p.hyoid_below_tip_mm
    z_bot = max(z_bot, z_tip - p.hyoid_max_below_tip_mm)
    y_post = y_tip - _tragus_depth(h, xs, zs, x_tip, y_tip, z_tip, p) + p.tragus_margin_mm
    # region, per (x, z): y above a limit
    ramp = np.clip((zz - z_rim) / 20.0, 0.0, 1.0)
    ylim = np.maximum(bf - p.front_allowance_mm, y_post + ramp * p.forehead_post_extra_mm)
    if math.isfinite(z_men):
        ylim = np.where(zz < z_men, np.maximum(ylim, y_men - p.submental_depth_mm), ylim)
    # never deeper than max_depth_mm behind the skin front of the column (tongue, pharynx)
    ylim = np.maximum(ylim, _fill(m.skin, -np.inf) - p.max_depth_mm)
    outz = (zz < z_bot) | (zz > z_top)
    wide = np.abs(xs - x_tip)[:, None] > p.forehead_half_width_mm + (1.0 - ramp) * 40.0
    if math.isfinite(z_men):  # under the chin: between the halves of the mandible only
        wide |= (np.abs(xs - x_tip)[:, None] > p.submental_half_width_mm) & (zz < z_men)
    ylim = np.where(outz | wide, np.inf, ylim)
    region = ys[None, :, None] > ylim[:, None, :]
    # the air margin is measured from the skin, not from a shell or sheet lying on it
    # thicker at the sides (skin facing left/right): x distances count less
    sx = g * p.air_margin_mm / max(p.air_margin_lateral_mm, p.air_margin_mm)
    near = ndi.distance_transform_edt(~m.body, sampling=(sx, g, g)) <= p.air_margin_mm
    mask = region & near & (h.data <= p.bone_hu)
    yaw, roll, pitch = pose
    nas, pog = line
    lips, soft_chin = _soft_landmarks(_profile(m, h, p), zs, z_tip, z_men, pog)
    to_w = h.to_world
    lm = FaceLandmarks(
        found=True,
        frame=h.axes,
        origin=h.origin,
        yaw=yaw,
        roll=roll,
        pitch=pitch,
        protrusion_mm=protrusion,
        nose_tip=to_w([x_tip, y_tip, z_tip]),
        nasion=None if nas is None else to_w([0.0, *nas]),
        pogonion=None if pog is None else to_w([0.0, *pog]),
        menton=None if not math.isfinite(z_men) else to_w([0.0, y_men, z_men]),
        lips=None if lips is None else to_w([0.0, *lips]),
        soft_chin=None if soft_chin is None else to_w([0.0, *soft_chin]),
        orbits_seen=orbits_seen,
        z_rim=z_rim,
        z_top=z_top,
        z_bottom=z_bot,
        y_post=y_post,
    )
    return mask, lm, h


# ---------------------------------------------------------------------------------------------
# Back to the stored grid.


def _to_source(
    found: tuple[Arr, FaceLandmarks, _Grid], hu: Arr, aff: Arr, p: AnnotateParams
) -> Arr:
    mask_h, _, h = found
    out = np.zeros(hu.shape, bool)
    if not mask_h.any():
        return out
    # bounding box of the mask in source indices
    nz = np.argwhere(mask_h)
    lo_i, hi_i = nz.min(0) - 1, nz.max(0) + 1
    corners = np.array(
        [
            [a, b, c]
            for a in (lo_i[0], hi_i[0])
            for b in (lo_i[1], hi_i[1])
            for c in (lo_i[2], hi_i[2])
        ],
        float,
    )
    cw = h.to_world(h.lo + h.spacing * corners)
    inv = np.linalg.inv(aff)
    cs = cw @ inv[:3, :3].T + inv[:3, 3]
    s0 = np.maximum(np.floor(cs.min(0)).astype(int), 0)
    s1 = np.minimum(np.ceil(cs.max(0)).astype(int) + 1, np.array(hu.shape))
    if np.any(s1 <= s0):
        return out
    # head index = (axes.T @ (aff @ s - origin) - lo) / g
    mat = h.axes.T @ aff[:3, :3] / h.spacing
    off = (h.axes.T @ (aff[:3, 3] - h.origin) - h.lo) / h.spacing + mat @ s0
    shape = tuple(int(v) for v in s1 - s0)
    f = ndi.affine_transform(
        mask_h.astype(np.float32), mat, off, output_shape=shape, order=1, cval=0.0
    )
    sl = tuple(slice(int(a), int(b)) for a, b in zip(s0, s1, strict=True))
    out[sl] = (f >= 0.5) & (hu[sl] <= p.bone_hu) & (hu[sl] >= p.pad_below_hu)
    pad = _fov_padding(hu, aff, p)
    if pad is not None:
        out &= pad
    return out


def _fov_padding(hu: Arr, aff: Arr, p: AnnotateParams) -> Arr | None:
    """Inside the reconstruction circle, as a bool array broadcastable to ``hu``, or None.

    Scanners pad outside the circular field of view of the axial slices with one constant
    value; at -1024 HU (or any value not below ``pad_below_hu``) it is not told apart from air
    by value. Here it is told by shape: the pixels of the axial plane (the two array axes least
    aligned with world S-I) that hold one value (at most -1000 HU) in every slice, the same for
    all of them, around a round region (its area at least ``fov_roundness`` of the disk that
    holds it). Air with noise is never that constant; a body on a constant background is not
    round.
    """
    ax = int(np.argmax(np.abs(aff[2, :3]) / np.sqrt((aff[:3, :3] ** 2).sum(0))))
    if hu.shape[ax] < 8:
        return None
    hi, lo = hu.max(axis=ax), hu.min(axis=ax)
    const = (hi == lo) & (lo <= -1000.0)
    if const.sum() < 0.02 * const.size:
        return None
    values, counts = np.unique(lo[const], return_counts=True)
    inside = ~(const & (lo == values[int(np.argmax(counts))]))
    if not inside.any():
        return None
    sp = np.delete(np.sqrt((aff[:3, :3] ** 2).sum(0)), ax)
    pts = np.argwhere(inside) * sp
    r2 = float(((pts - pts.mean(0)) ** 2).sum(1).max())
    if inside.sum() * sp[0] * sp[1] < p.fov_roundness * math.pi * r2:
        return None
    return np.expand_dims(inside, ax)
