import re

from ctadeface.dicom.uid import derived_uid

SOURCE = "1.2.840.113619.2.55.3.604688119.969.1234567890.123"


def test_a_derived_uid_is_a_valid_uid_and_the_same_for_the_same_inputs():
    uid = derived_uid(SOURCE, "k")
    assert uid == derived_uid(SOURCE, "k") != SOURCE
    assert uid.startswith("2.25.") and len(uid) <= 64  # PS3.5 9.1: at most 64 characters
    assert re.fullmatch(r"2\.25\.(0|[1-9][0-9]*)", uid)


def test_other_keys_and_other_sources_give_other_uids():
    uids = {derived_uid(s, k) for s in (SOURCE, SOURCE + "1") for k in ("k", "k/seg", "")}
    assert len(uids) == 6
