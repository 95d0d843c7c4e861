"""Tests of ctadeface.segment.archive: model zips are checked member by member before anything
is written."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest

from ctadeface.errors import ModelError
from ctadeface.segment.archive import extract_model_zip

TRAINED = "nnUNetTrainer__nnUNetPlans__3d_fullres"


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _hostile_zip(path: Path, kind: str) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"Dataset900_X/{TRAINED}/plans.json", "{}")
        if kind == "dotdot":
            z.writestr("Dataset900_X/../../evil.txt", "evil")
        elif kind == "absolute":
            z.writestr(str(path.parent / "evil.txt"), "evil")
        elif kind == "symlink":
            info = zipfile.ZipInfo(f"Dataset900_X/{TRAINED}/dataset.json")
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, str(path.parent / "evil.txt"))
        elif kind == "backslash":
            z.writestr("..\\evil.txt", "evil")


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "backslash"])
def test_hostile_zip_is_refused_and_writes_nothing(tmp_path: Path, kind: str) -> None:
    archive = tmp_path / "in" / "hostile.zip"
    archive.parent.mkdir()
    _hostile_zip(archive, kind)
    before = tree(tmp_path)
    with pytest.raises(ModelError, match=r"refusing model zip .*hostile\.zip: member") as err:
        extract_model_zip(archive, tmp_path / "cache")
    assert "\n" not in str(err.value)
    assert tree(tmp_path) - before <= {"cache", "cache/zips"}
    assert not (tmp_path / "evil.txt").exists()
    assert not any((tmp_path / "cache").rglob("*.json"))


def test_not_a_zip_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "model.zip"
    archive.write_bytes(b"not a zip at all")
    with pytest.raises(ModelError, match="not a readable zip file"):
        extract_model_zip(archive, tmp_path / "cache")
