"""Deface: turn a segmented face into a defaced image.

``postprocess`` (the fixed post-processing of the mask), ``margin`` (its air margin),
``skull`` (what the skull encloses, never masked), ``strict`` (strict mode: also the front of
the facial skeleton), ``fill`` (what replaces the masked voxels).
"""

from ctadeface.deface.fill import FILL_POLICIES, Fill, Seal, apply_fill, choose_fill
from ctadeface.deface.postprocess import PostProcess, postprocess
from ctadeface.deface.strict import StrictMask, StrictParams, strict_mask

__all__ = [
    "FILL_POLICIES",
    "Fill",
    "PostProcess",
    "Seal",
    "StrictMask",
    "StrictParams",
    "apply_fill",
    "choose_fill",
    "postprocess",
    "strict_mask",
]
