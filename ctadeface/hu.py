"""Hounsfield-unit levels shared by the stages, in HU (air about -1000, water 0).

Each level has one owner here; a stage that needs another level of its own (an isosurface of
the renders, the skull's bone threshold) keeps it beside the code that uses it.
"""

from __future__ import annotations

#: Nominal air: the ``air`` fill, and the air the ``noise`` fill falls back to.
AIR_HU = -1000.0
#: What lies outside a scan's field of view when it is resampled or rendered: air as scanners
#: store it (stored 0 with intercept -1024).
OUTSIDE_HU = -1024.0
#: Voxels above this are body (skin, soft tissue, bone) or a device on it (table, head holder,
#: shell); air, lung and scanner padding (-1024/-2048/-3024) lie below.
BODY_HU = -500.0
#: Voxels above this are bone or teeth, never part of a face mask; contrast-enhanced vessels
#: (200-500 HU in CTA) lie below.
BONE_HU = 600.0
