"""Model archives: unpacking nnU-Net model zips safely, and fetching a model at build time.

A zip made by ``nnUNetv2_export_model_to_zip`` is checked member by member before anything is
written (no absolute paths, no ``..``, no links or special files, a bounded size) and unpacked
into a cache folder named by its sha256, under a temporary name renamed into place.
:func:`fetch` (a URL, a zip or a folder) is for container builds only: the app itself never
downloads anything.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from ctadeface.errors import ModelError
from ctadeface.io import sha256_file

log = logging.getLogger(__name__)

#: Refuse model zips that would unpack to more than this (bytes): a zip bomb guard.
MAX_ZIP_UNPACKED_BYTES = 8 * 1024**3


def extract_model_zip(zip_path: Path, cache_dir: Path) -> Path:
    """Unpack an nnU-Net model zip into ``cache_dir/zips/<sha256 of the zip>/`` and return it.

    Every member is checked before anything is written: no absolute paths, no ``..``, no
    symlinks or other special files, no backslashes, a bounded unpacked size. Unpacking goes to a
    temporary folder next to the target, renamed into place at the end; an existing unpacked
    copy is reused. Raises ModelError.
    """
    digest = sha256_file(zip_path)
    zips_dir = cache_dir / "zips"
    target = zips_dir / digest
    if target.is_dir():
        log.info("model zip %s: using the unpacked copy %s", zip_path, target)
        return target
    try:
        with zipfile.ZipFile(zip_path) as opened:
            members = opened.infolist()
            _check_zip_members(zip_path, members)
            zips_dir.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-", dir=zips_dir))
            try:
                for info in members:
                    _extract_member(opened, info, tmp)
                os.replace(tmp, target)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                if target.is_dir():  # another process unpacked the same zip meanwhile
                    return target
                raise
    except zipfile.BadZipFile as err:
        raise ModelError(f"model zip {zip_path} is not a readable zip file ({err})") from err
    except OSError as err:
        raise ModelError(f"model zip {zip_path}: cannot unpack into {zips_dir} ({err})") from err
    log.info("model zip %s: unpacked into %s", zip_path, target)
    return target


def _check_zip_members(zip_path: Path, members: Sequence[zipfile.ZipInfo]) -> None:
    total = 0
    for info in members:
        reason = _unsafe_member_reason(info)
        if reason:
            raise ModelError(f"refusing model zip {zip_path}: member '{info.filename}' {reason}")
        total += info.file_size
    if total > MAX_ZIP_UNPACKED_BYTES:
        raise ModelError(
            f"refusing model zip {zip_path}: it unpacks to {total} bytes "
            f"(more than {MAX_ZIP_UNPACKED_BYTES})"
        )


def _unsafe_member_reason(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if "\\" in name or "\x00" in name:
        return "has a backslash or NUL in its name"
    pure = PurePosixPath(name)
    if pure.is_absolute() or re.match(r"^[A-Za-z]:", name):
        return "is an absolute path"
    if ".." in pure.parts:
        return "has a '..' component"
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFLNK:
        return "is a symbolic link"
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "is not a regular file or folder"
    return None


def _extract_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path) -> None:
    out = dest.joinpath(*PurePosixPath(info.filename).parts)
    if not out.resolve().is_relative_to(dest.resolve()):  # belt and braces
        raise ModelError(f"refusing zip member '{info.filename}': it would land outside {dest}")
    if info.is_dir():
        out.mkdir(parents=True, exist_ok=True)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    with archive.open(info) as src, out.open("xb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


def fetch(source: str, work: Path) -> Path:
    """A local folder holding what ``source`` names: an https URL (downloaded into ``work`` and
    unpacked), a zip (unpacked into ``work``) or a folder (itself). Build time only. Raises
    ModelError."""
    local = Path(source).expanduser()
    if source.startswith(("https://", "http://")):
        local = work / "download.zip"
        _download(source, local)
    if local.is_file():
        return extract_model_zip(local, work / "cache")
    if local.is_dir():
        return local
    raise ModelError(f"model source {source} is neither a URL, a zip nor a folder")


def move_into_place(folder: Path, target: Path, staged: Path) -> None:
    """Copy ``folder`` to ``staged`` (a scratch path on ``target``'s file system), then rename
    it to ``target`` in one step, so that ``target`` never exists half-copied."""
    shutil.copytree(folder, staged)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, target)


def _download(url: str, dest: Path) -> None:
    """Fetch ``url`` to ``dest`` (build time only)."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=600) as response, dest.open("wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except OSError as err:
        raise ModelError(f"cannot download {url} ({err})") from err
