"""Load and write NIfTI CT images without changing what the scanner wrote.

The only module of the pipeline that opens image files. Arrays are kept in the *stored* dtype and
in the voxel order found on disk (axes i, j, k); Hounsfield units are ``data * slope + inter``.
Every file is written under a temporary name in its destination folder and renamed into place, so
a reader never sees a half-written output.

``.nii.gz`` files are read and written with Intel ISA-L (``isal``, same deflate format, several
times faster at level 1) when it is installed, else with Python's ``gzip``; outputs are
compressed at level 1, like nibabel's default.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import os
import shutil
import socket
import types
import typing
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from ctadeface.errors import InputError, OutputError

_gzip: types.ModuleType
_GZIP_ERRORS: tuple[type[BaseException], ...]
try:  # ISA-L: the same gzip streams, several times faster
    from isal import igzip as _gzip
    from isal import isal_zlib as _zlib

    GZIP_BACKEND = "isal"
    _GZIP_ERRORS = (zlib.error, typing.cast(type[BaseException], _zlib.error), gzip.BadGzipFile)
except ImportError:  # pragma: no cover - isal is a pinned dependency
    _gzip = gzip
    GZIP_BACKEND = "zlib"
    _GZIP_ERRORS = (zlib.error, gzip.BadGzipFile)

#: What reading a file's voxels may raise: I/O, a short file, a bad stream.
_READ_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError, ValueError, *_GZIP_ERRORS)

#: gzip level of written ``.nii.gz`` files (nibabel's default, fast).
COMPRESS_LEVEL = 1

#: Refuse headers that claim more voxels than this before any allocation (about 4 GiB of int16).
MAX_VOXELS = 2**31
#: deflate never compresses better than 1032:1, so a ``.gz`` of N bytes holds at most this * N.
_MAX_DEFLATE_RATIO = 1032
#: Marker in the names of temporary files, so a later run can find and remove stale ones.
TEMP_MARKER = ".ctadeface-tmp-"
_CHUNK = 1 << 20


@dataclass(frozen=True, eq=False)
class CTImage:
    """A CT volume as stored on disk.

    Attributes:
        path: the file it was read from.
        data: stored values (the file's dtype), shape (ni, nj, nk) in the file's voxel order.
        affine: 4x4 voxel (i, j, k) -> RAS+ world (mm), as nibabel resolves sform/qform.
        header: the file's NIfTI header (a private copy), kept so outputs can reuse it.
        slope, inter: scaling to Hounsfield units, ``HU = data * slope + inter``.
        spacing: voxel size in mm along the array axes (i, j, k).
    """

    path: Path
    data: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header
    slope: float
    inter: float
    spacing: tuple[float, float, float]

    def hu(self) -> np.ndarray:
        """The image in Hounsfield units, float32, same shape and axes as ``data``
        (:func:`to_hu`)."""
        return to_hu(self.data, self.slope, self.inter)

    def hu_view(self) -> HUView:
        """The image in HU, computed only for the region indexed (no full float copy)."""
        return HUView(self.data, self.slope, self.inter)

    @typing.overload
    def to_stored(self, hu: float) -> float: ...
    @typing.overload
    def to_stored(self, hu: np.ndarray) -> np.ndarray: ...
    def to_stored(self, hu: float | np.ndarray) -> float | np.ndarray:
        """Convert HU to the stored units of ``data`` (not rounded or clipped)."""
        return (hu - self.inter) / self.slope


def to_hu(values: np.ndarray, slope: float, inter: float) -> np.ndarray:
    """Stored ``values`` in Hounsfield units (``values * slope + inter``), float32, same shape.

    Scaled in float64 and rounded once to float32 (as nnU-Net's SimpleITK reader does), slab
    by slab along the first axis so that no full float64 copy is ever held.
    """
    if slope == 1.0 and inter == 0.0:
        return values.astype(np.float32)
    out = np.empty(values.shape, dtype=np.float32)
    step = max(1, (1 << 22) // max(1, int(np.prod(values.shape[1:]))))
    for i in range(0, values.shape[0], step):
        out[i : i + step] = values[i : i + step] * slope + inter
    return out


@dataclass(frozen=True, eq=False)
class HUView:
    """Read-only HU view of stored values: ``view[box]`` is float32 HU of that box only.

    Attributes:
        data: stored values (i, j, k).
        slope, inter: HU = data * slope + inter.
    """

    data: np.ndarray
    slope: float
    inter: float

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        hu = np.asarray(self.data[key], dtype=np.float32)
        if self.slope != 1.0 or self.inter != 0.0:
            hu = hu * np.float32(self.slope) + np.float32(self.inter)
        return hu


def _fail(path: Path, problem: str) -> InputError:
    return InputError(f"{path}: {problem}")


def _check_header(path: Path, header: nib.Nifti1Header) -> tuple[int, int, int]:
    """Validate the grid a header claims before any voxel is read; return the 3D shape."""
    try:
        shape = tuple(int(n) for n in header.get_data_shape())
    except (nib.spatialimages.HeaderDataError, ValueError) as e:
        raise _fail(path, f"invalid NIfTI header ({_reason(e)})") from e
    if len(shape) > 3 and all(n == 1 for n in shape[3:]):
        shape = shape[:3]
    if len(shape) != 3:
        raise _fail(path, f"not a 3D image (shape {shape}); give one volume per file")
    if min(shape) < 2:
        raise _fail(path, f"not a 3D volume (shape {shape})")
    if int(np.prod(shape, dtype=np.int64)) > MAX_VOXELS:
        raise _fail(path, f"header claims a {shape} grid, larger than {MAX_VOXELS} voxels")
    zooms = tuple(float(z) for z in header.get_zooms()[:3])
    if not all(np.isfinite(z) and z > 0 for z in zooms):
        raise _fail(path, f"voxel sizes (pixdim) must be positive, got {zooms}")
    return shape[0], shape[1], shape[2]


def _check_size(path: Path, header: nib.Nifti1Header, shape: tuple[int, int, int]) -> None:
    """Refuse a header claiming more voxel bytes than the file can hold, before allocating."""
    try:
        itemsize = header.get_data_dtype().itemsize
        offset = int(header["vox_offset"])
    except (KeyError, ValueError, TypeError, OverflowError, nib.spatialimages.HeaderDataError):
        return  # an unknown data type or offset: nibabel's loader reports it
    claimed = offset + int(np.prod(shape, dtype=np.int64)) * itemsize
    size = path.stat().st_size
    room = size * _MAX_DEFLATE_RATIO if path.name.endswith(".gz") else size
    if claimed > room:
        raise _fail(
            path,
            f"header claims a {shape} grid of {header.get_data_dtype()} ({claimed} bytes), more "
            f"than this {size}-byte file can hold (truncated or corrupt)",
        )


def load_ct(path: Path) -> CTImage:
    """Read a NIfTI-1/2 CT image, refusing anything that is not a plain 3D scalar volume.

    Raises:
        InputError: one line naming the file and the problem (missing, unreadable, corrupt,
            not NIfTI, not 3D, huge, non-positive spacing, singular affine, non-finite values).
    """
    path = Path(path)
    if not path.is_file():
        raise _fail(path, "no such file")
    if path.stat().st_size == 0:
        raise _fail(path, "empty file (0 bytes)")
    raw = _raw_header(path)
    shape = _check_header(path, raw)  # checked before nibabel "fixes" the header
    _check_size(path, raw, shape)
    try:
        img = nib.load(str(path))
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, zlib.error, ValueError) as e:
        raise _fail(path, f"not a readable NIfTI image ({_reason(e)})") from e
    except (nib.spatialimages.HeaderDataError, np.linalg.LinAlgError) as e:
        raise _fail(path, f"invalid NIfTI header ({_reason(e)})") from e
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise _fail(path, f"not a NIfTI image ({type(img).__name__})")
    header = img.header.copy()
    # nibabel blanks scl_slope/scl_inter of a loaded header (the scaling moves to the data
    # proxy); keep the values on disk so that outputs carry the source's scaling unchanged.
    header["scl_slope"], header["scl_inter"] = raw["scl_slope"], raw["scl_inter"]
    try:
        affine = np.asarray(img.affine, dtype=np.float64)
    except (nib.spatialimages.HeaderDataError, np.linalg.LinAlgError, ValueError) as e:
        raise _fail(path, f"the voxel-to-world affine is invalid ({_reason(e)})") from e
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise _fail(path, "the voxel-to-world affine is singular or not finite")
    proxy: Any = img.dataobj  # nibabel's ArrayProxy: dtype, offset, slope, inter of the file
    try:
        data = _read_array(path, proxy.dtype, int(proxy.offset), shape)
    except _READ_ERRORS as e:
        raise _fail(path, f"image data cannot be read ({_reason(e)})") from e
    if data.dtype.kind not in "iuf":
        raise _fail(path, f"unsupported data type {data.dtype}")
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        raise _fail(path, "image contains NaN or infinite values")
    slope, inter = proxy.slope, proxy.inter
    if not _scaling_fits(data, float(slope), float(inter)):
        raise _fail(
            path, f"scl_slope {slope:g} / scl_inter {inter:g} scale the data beyond float32"
        )
    return CTImage(
        path=path,
        data=data,
        affine=affine,
        header=header,
        slope=float(slope),
        inter=float(inter),
        spacing=tuple(float(z) for z in header.get_zooms()[:3]),  # type: ignore[arg-type]
    )


def _scaling_fits(data: np.ndarray, slope: float, inter: float) -> bool:
    """Whether ``data * slope + inter`` is finite in float32 for every voxel (HU are float32).

    Decided from the dtype's range when that suffices (no pass over the data)."""
    if not (np.isfinite(slope) and np.isfinite(inter)):
        return False
    limit = float(np.finfo(np.float32).max) / 2
    if data.dtype.kind in "iu":
        info = np.iinfo(data.dtype)
        largest = max(abs(float(info.min)), abs(float(info.max)))
        if abs(slope) * largest + abs(inter) < limit:
            return True
    extremes = (float(data.min()), float(data.max())) if data.size else (0.0, 0.0)
    return all(abs(v * slope + inter) < limit for v in extremes)


def _read_array(
    path: Path, dtype: np.dtype, offset: int, shape: tuple[int, int, int]
) -> np.ndarray:
    """The stored voxel values (``dtype`` with the file's byte order, from byte ``offset``),
    read straight into one Fortran-ordered array, which is the file's voxel order."""
    out = np.empty(shape, dtype=dtype, order="F")
    target = out.T.data.cast("B")  # out.T is C-contiguous: the bytes in file order
    opener = _gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        fh.seek(offset)
        done = 0
        while done < target.nbytes:
            n = fh.readinto(target[done:])
            if not n:
                raise EOFError(f"file ends after {done} of {target.nbytes} bytes of image data")
            done += n
    return out


def _raw_header(path: Path) -> nib.Nifti1Header:
    """The header exactly as stored (nibabel's loader silently "fixes" zero/negative pixdim)."""
    try:
        with nib.openers.ImageOpener(str(path)) as fh:
            block = fh.read(540)
    except (OSError, EOFError, zlib.error) as e:
        raise _fail(path, f"not a readable NIfTI image ({_reason(e)})") from e
    for klass in (nib.Nifti1Header, nib.Nifti2Header):
        size = klass.template_dtype.itemsize
        if len(block) < size:
            continue
        for order in ("<", ">"):
            if int(np.frombuffer(block[:4], dtype=f"{order}i4")[0]) == size:
                hdr = klass(block[:size], endianness=order, check=False)
                if hdr["magic"].item() in (b"n+1", b"ni1", b"n+2", b"ni2"):
                    return hdr
    raise _fail(path, "not a NIfTI image (no NIfTI header found)")


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:200]


def image_like(data: np.ndarray, like: CTImage) -> nib.Nifti1Image:
    """A NIfTI image holding ``data`` with ``like``'s header: same qform/sform and codes,
    units, pixdim, descrip, intent and extensions. If ``data`` has the source dtype the source's
    scl_slope/scl_inter are kept; otherwise (e.g. a uint8 mask) scaling is reset to none."""
    header = like.header.copy()
    klass = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    header.set_data_shape(data.shape)
    header.set_data_dtype(data.dtype)
    img = klass(data, None, header=header)
    if data.dtype == like.data.dtype:
        # Written as stored (set_slope_inter refuses a 0 slope, which NIfTI reads as "none");
        # NaN/NaN would make nibabel choose its own scaling, so the resolved values go instead.
        slope, inter = (float(like.header[k]) for k in ("scl_slope", "scl_inter"))
        if np.isnan(slope) and np.isnan(inter):
            slope, inter = like.slope, like.inter
        img.header["scl_slope"], img.header["scl_inter"] = slope, inter
    else:
        img.header.set_slope_inter(1.0, 0.0)
    return img


def _owner() -> str:
    """Who may judge whether a temp file's writer is alive: this host and PID namespace (two
    containers on one node share a hostname but not their process ids)."""
    try:
        namespace = os.readlink("/proc/self/ns/pid").strip("pid:[]")
    except OSError:
        namespace = "0"
    host = socket.gethostname().replace("-", "_")
    return f"{host}.{namespace}"


def _temp_name(path: Path) -> Path:
    """A hidden sibling of ``path`` with the same extension, unique to this host and process."""
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    base = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    token = f"{_owner()}-{os.getpid()}-{os.urandom(4).hex()}"
    return path.with_name(f".{base}{TEMP_MARKER}{token}{suffix}")


@contextlib.contextmanager
def _atomic_path(path: Path, *, exclusive: bool = False) -> Iterator[Path]:
    """Yield a temporary path; on success fsync it and move it to ``path``.

    With ``exclusive`` the move fails silently if ``path`` already exists (first writer wins),
    which lets concurrent processes create a shared file exactly once.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{path.parent}: cannot create folder ({e.strerror or e})") from e
    tmp = _temp_name(path)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        if exclusive:
            _link_once(tmp, path)
            with contextlib.suppress(FileNotFoundError):  # renamed by the fallback
                tmp.unlink()
        else:
            os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from e
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _link_once(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the name ``path`` unless that exists (first writer wins). Falls back to a
    checked rename on file systems without hard links (some network and FUSE mounts)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        return
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if not path.exists():
            os.replace(tmp, path)


def write_image_atomic(path: Path, data: np.ndarray, like: CTImage) -> str:
    """Write ``data`` (same grid as ``like``) as NIfTI at ``path`` (``.nii`` or ``.nii.gz``);
    return the hex sha256 of the file written (a ``.nii.gz`` is hashed as it is written)."""
    if data.shape != like.data.shape:
        raise ValueError(f"shape {data.shape} does not match the source grid {like.data.shape}")
    img = image_like(data, like)
    with _atomic_path(path) as tmp:
        if path.name.endswith(".gz"):
            with open(tmp, "wb") as raw:
                hashed = _HashingWriter(raw)
                with _gzip.GzipFile(
                    fileobj=hashed, mode="wb", compresslevel=COMPRESS_LEVEL, mtime=0
                ) as fh:
                    img.to_stream(fh)
            digest = hashed.hexdigest()
        else:
            nib.save(img, str(tmp))
            digest = sha256_file(tmp)
    return digest


class _HashingWriter:
    """A binary file wrapper that hashes (sha256) what goes through ``write``."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._digest = hashlib.sha256()

    def write(self, data: Any) -> int:
        self._digest.update(data)
        return int(self._raw.write(data))

    def flush(self) -> None:
        self._raw.flush()

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


@contextlib.contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it takes the name ``path`` (an
    existing ``path`` is moved aside first and then deleted), on failure it is deleted. A killed
    run leaves only a hidden temporary folder (:func:`remove_stale_temps`)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temp_name(path)
        tmp.mkdir()
    except OSError as e:
        raise OutputError(f"{path.parent}: cannot create folder ({e.strerror or e})") from e
    try:
        yield tmp
        old = _temp_name(path) if path.exists() else None
        if old is not None:
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` at ``path`` atomically (e.g. a PNG figure)."""
    with _atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: Path, text: str, *, exclusive: bool = False) -> None:
    """Write UTF-8 text at ``path`` atomically (``exclusive``: only if it does not exist)."""
    with _atomic_path(path, exclusive=exclusive) as tmp:
        tmp.write_text(text, encoding="utf-8")


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete temporary files left in ``folder`` (recursively) by killed runs of this host.

    Only files whose embedded process id is no longer alive on this host are removed, so
    concurrent runs writing to the same output folder are left alone. Returns what was removed.
    """
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    host = _owner()
    for tmp in list(folder.rglob(f".*{TEMP_MARKER}*")):
        parts = tmp.name.split(TEMP_MARKER, 1)[1].rsplit("-", 2)
        if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
            continue
        pid_text = parts[1]
        if _pid_alive(int(pid_text)):
            continue
        with contextlib.suppress(OSError):
            if tmp.is_dir():
                shutil.rmtree(tmp)
            else:
                tmp.unlink()
            removed.append(tmp)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()
