"""What became of one scan: the statuses the participant level records and the group level
reads."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """A scan's status; its value is what the sidecar, the TSV and the log say."""

    DEFACED = "defaced"
    #: the defaced renders still pick out their own original among a gallery of other heads
    IDENTIFIABLE = "identifiable"
    #: not identifiable, but a face detector still fires on a defaced render (expected of a
    #: kept facial skeleton in face mask mode; a failure in strict mode)
    FACE_LIKE = "face-like"
    #: the post-processed mask holds no voxel (no face in the field of view?)
    MASK_EMPTY = "mask-empty"
    #: outputs up to date, nothing done
    SKIPPED = "skipped"
    #: the scan could not be defaced (its one-line reason is logged)
    FAILED = "failed"
    #: a dry run would deface it
    PLANNED = "planned"
    #: group level: no participant-level outputs for this scan
    MISSING = "missing"
