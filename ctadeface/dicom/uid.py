"""Derived DICOM UIDs: new UIDs computed from a source UID, so that a rerun with the same
settings writes the same UIDs and no one can invert them.

A derived UID is ``2.25.`` and the integer of the name-based UUID (version 5, PS3.5 B.2) of
:data:`UID_SALT`, the caller's key and the source UID.
"""

from __future__ import annotations

import uuid

#: Mixed into every derived UID, so that they differ from any other tool's derivation.
UID_SALT = "ctadeface-defaced"


def derived_uid(source_uid: str, key: str) -> str:
    """A new UID derived from ``source_uid`` and ``key`` (module docstring); the same inputs
    give the same UID, different keys give different UIDs."""
    name = "/".join((UID_SALT, key, source_uid))
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, name).int}"
