"""De-identification of a DICOM instance: the Basic Application Level Confidentiality Profile
of DICOM PS3.15 Annex E, with the Retain Longitudinal Temporal Information and Clean Descriptors
options off and no other option but Clean Recognizable Visual Features (the defacing itself).

The profile's actions come from the tables of Kitware's ``dicom-anonymizer``
(:data:`PROFILE_TABLE`, PS3.15 Table E.1-1 of that DICOM edition): D dummy values, Z empty,
X removed, U new UIDs; private attributes are removed. Two actions are this module's own:

- U: every UID the profile replaces becomes :func:`ctadeface.dicom.uid.derived_uid` of the old
  one with :data:`UID_KEY` (not the library's random UIDs): the series of one study keep one
  StudyInstanceUID and FrameOfReferenceUID, and a rerun writes the same UIDs. Who holds a source
  series can compute its mapped UIDs (as with any hash-based replacement) but no one can invert
  them.
- ReferencedImageSequence and SourceImageSequence (X/Z/U*) are removed: their items reference
  instances that are not shared.

Afterwards PatientIdentityRemoved is ``YES``, LongitudinalTemporalInformationModified
``REMOVED`` (dates are the profile's dummies), and DeidentificationMethod with
DeidentificationMethodCodeSequence (CID 7050) say what was done.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import version
from typing import Any

from ctadeface.dicom.uid import derived_uid

#: ``--deidentify``: the Basic Profile, or every attribute kept (pixel data and UIDs new).
PROFILES = ("basic", "none")
#: The dicom-anonymizer table used: PS3.15 Table E.1-1 of DICOM 2026c.
PROFILE_TABLE = "dicomfields_2026c"
#: The key of :func:`derived_uid` for UIDs replaced by the profile.
UID_KEY = "deidentified"
#: DeidentificationMethodCodeSequence (DICOM CID 7050): the profile, and the defacing as its
#: Clean Recognizable Visual Features option.
BASIC_PROFILE = ("113100", "DCM", "Basic Application Confidentiality Profile")
CLEAN_VISUAL_FEATURES = ("113102", "DCM", "Clean Recognizable Visual Features Option")
#: The sequences removed instead of emptied (module docstring).
REMOVED_REFERENCES = ((0x0008, 0x1140), (0x0008, 0x2112))


def _new_uid(dataset: Any, tag: tuple[int, int]) -> None:
    """The profile's U: every value of a UI attribute mapped to its derived UID."""
    element = dataset.get(tag)
    if element is None or element.VR != "UI" or not element.value:
        return
    values = element.value if element.VM > 1 else [element.value]
    mapped = [derived_uid(str(v), UID_KEY) for v in values]
    element.value = mapped if element.VM > 1 else mapped[0]


def _remove(dataset: Any, tag: tuple[int, int]) -> None:
    if tag in dataset:
        del dataset[tag]


def _rules() -> dict[tuple[int, ...], Callable[[Any, tuple[int, int]], None]]:
    """The library's actions for :data:`PROFILE_TABLE` with this module's two of its own."""
    from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector
    from dicomanonymizer.simpledicomanonymizer import initialize_actions

    rules = initialize_actions(PROFILE_TABLE)
    rules.update(
        dict.fromkeys(dicom_anonymization_database_selector(PROFILE_TABLE)["U_TAGS"], _new_uid)
    )
    rules.update(dict.fromkeys(REMOVED_REFERENCES, _remove))
    return rules


def method_description() -> list[str]:
    """DeidentificationMethod's values (LO, at most 64 characters each): the profile, the
    library that applied it, what this module adds, and the defacing."""
    from ctadeface import __version__

    return [
        "DICOM PS3.15 E.1 Basic Application Confidentiality Profile",
        f"dicom-anonymizer {version('dicom-anonymizer')}, table {PROFILE_TABLE[-5:]}",
        "private attributes removed",
        "UIDs replaced by name-based UIDs",
        f"face removed by ctadeface {__version__}",
    ]


def deidentify(dataset: Any) -> None:
    """Apply the profile to a ``pydicom.Dataset`` in place (its file meta included)."""
    from dicomanonymizer.simpledicomanonymizer import anonymize_dataset
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    rules = _rules()
    anonymize_dataset(dataset, None, delete_private_tags=True, base_rules_gen=lambda: rules)
    dataset.PatientIdentityRemoved = "YES"
    dataset.LongitudinalTemporalInformationModified = "REMOVED"
    dataset.DeidentificationMethod = method_description()
    codes = []
    for value, scheme, meaning in (BASIC_PROFILE, CLEAN_VISUAL_FEATURES):
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, scheme, meaning
        codes.append(code)
    dataset.DeidentificationMethodCodeSequence = DicomSequence(codes)
