"""ctadeface.io: loading keeps stored values and header; writing is atomic and header-exact."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ctadeface.errors import InputError, OutputError
from ctadeface.io import (
    TEMP_MARKER,
    atomic_folder,
    load_ct,
    remove_stale_temps,
    sha256_file,
    write_image_atomic,
    write_text_atomic,
)

CASES = [  # dtype, slope, inter
    (np.int16, 1.0, 0.0),
    (np.int16, 0.5, -1024.0),
    (np.uint16, 1.0, -1024.0),
    (np.float32, 1.0, 0.0),
    (np.uint8, 12.7, -1076.2),
]


def _save(path: Path, dtype, slope: float, inter: float, *, qcode: int = 1, scode: int = 2) -> None:
    rng = np.random.default_rng(0)
    arr = (rng.random((10, 12, 9)) * 200).astype(dtype)
    aff = np.array([[0, -0.7, 0, 10], [0.5, 0, 0, 20], [0, 0, 2.0, -30], [0, 0, 0, 1]])
    img = nib.Nifti1Image(arr, None)
    img.header.set_slope_inter(slope, inter)
    img.header.set_qform(aff, code=qcode)
    img.header.set_sform(aff, code=scode)
    img.header.set_xyzt_units("mm", "sec")
    img.header["descrip"] = b"scanner description"
    nib.save(img, str(path))


@pytest.mark.parametrize(("dtype", "slope", "inter"), CASES)
def test_roundtrip_keeps_dtype_scaling_and_header_bytes(tmp_path, dtype, slope, inter):
    src = tmp_path / "src.nii.gz"
    _save(src, dtype, slope, inter)
    ct = load_ct(src)
    assert ct.data.dtype == np.dtype(dtype)
    assert ct.slope == pytest.approx(slope, rel=1e-6)
    assert ct.inter == pytest.approx(inter, rel=1e-6)
    assert ct.spacing == pytest.approx((0.5, 0.7, 2.0))
    expected_hu = np.asanyarray(nib.load(str(src)).dataobj).astype(np.float32)
    np.testing.assert_allclose(ct.hu(), expected_hu, rtol=1e-5, atol=1e-3)

    out = ct.data.copy()
    out[0, 0, 0] = out[1, 1, 1]
    dst = tmp_path / "dst.nii.gz"
    write_image_atomic(dst, out, ct)
    back = load_ct(dst)
    assert back.data.dtype == ct.data.dtype
    np.testing.assert_array_equal(back.data, out)
    # nibabel blanks scl_* of loaded headers, so compare the header bytes on disk
    assert gzip.decompress(dst.read_bytes())[:348] == gzip.decompress(src.read_bytes())[:348]
    assert (back.slope, back.inter) == (ct.slope, ct.inter)
    np.testing.assert_array_equal(back.hu()[1:], ct.hu()[1:])  # [0,0,0] was changed


def test_mask_written_as_uint8_with_source_geometry(tmp_path):
    src = tmp_path / "src.nii"
    _save(src, np.int16, 0.5, -1024.0, qcode=1, scode=0)
    ct = load_ct(src)
    mask = (ct.data > 100).astype(np.uint8)
    dst = tmp_path / "mask.nii.gz"
    write_image_atomic(dst, mask, ct)
    img = nib.load(str(dst))
    assert img.get_data_dtype() == np.uint8
    assert img.header.get_slope_inter() in ((None, None), (1.0, 0.0))
    assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 0
    np.testing.assert_allclose(img.affine, ct.affine)
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), mask)


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("name", "make", "words"),
    [
        ("empty.nii.gz", lambda p: _write_bytes(p, b""), "empty file"),
        ("text.nii.gz", lambda p: _write_bytes(p, gzip.compress(b"hello" * 100)), "NIfTI"),
        ("plain.nii.gz", lambda p: _write_bytes(p, b"not gzip at all" * 40), "NIfTI"),
        ("missing.nii.gz", lambda p: p, "no such file"),
    ],
)
def test_unreadable_inputs_give_one_line_naming_the_file(tmp_path, name, make, words):
    path = make(tmp_path / name)
    with pytest.raises(InputError) as err:
        load_ct(path)
    message = str(err.value)
    assert str(path) in message and words in message and "\n" not in message


def test_truncated_gzip_is_an_input_error(tmp_path):
    src = tmp_path / "src.nii.gz"
    _save(src, np.int16, 1.0, 0.0)
    blob = src.read_bytes()
    bad = _write_bytes(tmp_path / "cut.nii.gz", blob[: len(blob) // 2])
    with pytest.raises(InputError, match=r"cut\.nii\.gz"):
        load_ct(bad)


@pytest.mark.parametrize(
    ("shape", "words"), [((10, 12), "not a 3D"), ((6, 6, 6, 3), "not a 3D"), ((1, 8, 8), "3D")]
)
def test_wrong_dimensionality_refused(tmp_path, shape, words):
    path = tmp_path / "x.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(shape, np.int16), np.eye(4)), str(path))
    with pytest.raises(InputError, match=words):
        load_ct(path)


def test_singleton_fourth_dimension_is_accepted(tmp_path):
    path = tmp_path / "x.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((6, 7, 8, 1), np.int16), np.eye(4)), str(path))
    assert load_ct(path).data.shape == (6, 7, 8)


def test_huge_header_refused_before_reading(tmp_path):
    path = tmp_path / "huge.nii"
    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4))
    img.header.set_data_shape((30000, 30000, 30000))
    path.write_bytes(img.header.binaryblock + b"\0" * 4 + b"\0" * 128)
    with pytest.raises(InputError, match="larger than"):
        load_ct(path)


def test_nonpositive_spacing_and_singular_affine_refused(tmp_path):
    for bad in (0.0, -1.0):
        img = nib.Nifti1Image(np.zeros((5, 5, 5), np.int16), np.eye(4))
        path = tmp_path / "zero.nii"
        nib.save(img, str(path))
        hdr = nib.Nifti1Header(path.read_bytes()[:348], check=False)
        hdr["pixdim"][2] = bad
        path.write_bytes(hdr.binaryblock + path.read_bytes()[348:])
        with pytest.raises(InputError, match="pixdim"):
            load_ct(path)
    path2 = tmp_path / "sing.nii"
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 5), np.int16), np.eye(4)), str(path2))
    hdr = nib.Nifti1Header(path2.read_bytes()[:348], check=False)
    hdr["qform_code"], hdr["sform_code"] = 0, 1
    hdr["srow_z"] = [0, 0, 0, 0]
    path2.write_bytes(hdr.binaryblock + path2.read_bytes()[348:])
    with pytest.raises(InputError, match="affine"):
        load_ct(path2)


def test_nan_in_float_image_refused(tmp_path):
    arr = np.zeros((5, 5, 5), np.float32)
    arr[2, 2, 2] = np.nan
    path = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(path))
    with pytest.raises(InputError, match="NaN"):
        load_ct(path)


def test_scaling_beyond_float32_refused_but_a_large_harmless_one_kept(tmp_path):
    path = tmp_path / "huge.nii"
    _save(path, np.int16, 1e36, 0.0)  # int16 values up to 199 times 1e36: float32 overflows
    with pytest.raises(InputError, match=r"huge\.nii.*scale the data beyond float32"):
        load_ct(path)
    _save(path, np.int16, 1e35, 0.0)  # int16 could overflow, these data (< 200) do not
    image = load_ct(path)
    assert np.isfinite(image.hu()).all()


def test_write_text_atomic_and_exclusive(tmp_path):
    target = tmp_path / "a" / "b.json"
    write_text_atomic(target, "one")
    write_text_atomic(target, "two")
    assert target.read_text() == "two"
    write_text_atomic(target, "three", exclusive=True)
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["b.json"]


def test_disk_full_gives_output_error_and_no_partial_file(tmp_path, monkeypatch):
    import errno

    ct_path = tmp_path / "src.nii.gz"
    _save(ct_path, np.int16, 1.0, 0.0)
    ct = load_ct(ct_path)
    out = tmp_path / "out"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputError, match="No space left"):
        write_image_atomic(out / "x.nii.gz", ct.data, ct)
    assert list(out.iterdir()) == []


def test_interrupted_write_removes_temp(tmp_path, monkeypatch):
    ct_path = tmp_path / "src.nii.gz"
    _save(ct_path, np.int16, 1.0, 0.0)
    ct = load_ct(ct_path)

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(nib.Nifti1Image, "to_file_map", boom)
    with pytest.raises(KeyboardInterrupt):
        write_image_atomic(tmp_path / "o" / "x.nii.gz", ct.data, ct)
    assert list((tmp_path / "o").iterdir()) == []


def test_remove_stale_temps_only_removes_dead_owners(tmp_path):
    from ctadeface.io import _owner

    host = _owner()
    dead = tmp_path / f".x{TEMP_MARKER}{host}-999999999-abcd.nii.gz"
    alive = tmp_path / f".y{TEMP_MARKER}{host}-{os.getpid()}-abcd.nii.gz"
    other_host = tmp_path / f".z{TEMP_MARKER}elsewhere.1-1-abcd.json"
    for p in (dead, alive, other_host):
        p.write_bytes(b"partial")
    assert remove_stale_temps(tmp_path) == [dead]
    assert alive.exists() and other_host.exists() and not dead.exists()


def test_atomic_folder_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "out" / "series"
    with atomic_folder(target) as tmp:
        (tmp / "a").write_text("1")
        assert not target.exists()
    assert (target / "a").read_text() == "1"
    with atomic_folder(target) as tmp:  # a redo replaces the whole folder
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    with pytest.raises(KeyboardInterrupt), atomic_folder(target) as tmp:
        (tmp / "c").write_text("3")
        raise KeyboardInterrupt
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    assert [p.name for p in target.parent.iterdir()] == ["series"]


def test_a_killed_runs_temporary_folder_is_removed(tmp_path):
    from ctadeface.io import _owner

    stale = tmp_path / f".series{TEMP_MARKER}{_owner()}-999999999-abcd"
    (stale / "ct").mkdir(parents=True)
    (stale / "ct" / "00001.dcm").write_bytes(b"partial")
    assert remove_stale_temps(tmp_path) == [stale]
    assert list(tmp_path.iterdir()) == []


def test_sha256_file(tmp_path):
    import hashlib

    p = tmp_path / "f"
    p.write_bytes(b"abc" * 1000)
    assert sha256_file(p) == hashlib.sha256(b"abc" * 1000).hexdigest()


def test_exclusive_write_without_hard_links_still_writes_once(tmp_path, monkeypatch):
    import errno

    def no_links(src, dst):
        raise OSError(errno.EPERM, "hard links not supported")

    monkeypatch.setattr(os, "link", no_links)
    target = tmp_path / "d.json"
    write_text_atomic(target, "first", exclusive=True)
    write_text_atomic(target, "second", exclusive=True)
    assert target.read_text() == "first" and sorted(os.listdir(tmp_path)) == ["d.json"]


def test_hu_view_converts_only_the_box(tmp_path):
    path = tmp_path / "s.nii.gz"
    _save(path, np.int16, 0.5, -1024.0)
    ct = load_ct(path)
    view = ct.hu_view()
    box = (slice(1, 3), slice(None), slice(0, 2))
    assert view.shape == ct.data.shape
    part = view[box]
    assert part.dtype == np.float32 and part.shape == ct.data[box].shape
    np.testing.assert_allclose(part, ct.hu()[box])


def test_loaded_array_is_fortran_ordered_and_writable(tmp_path):
    path = tmp_path / "s.nii.gz"
    _save(path, np.int16, 1.0, 0.0)
    ct = load_ct(path)
    assert ct.data.flags.f_contiguous and ct.data.flags.writeable
    np.testing.assert_array_equal(ct.data, np.asanyarray(nib.load(path).dataobj.get_unscaled()))


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_write_image_returns_the_sha256_of_the_file_and_is_reproducible(tmp_path, suffix):
    _save(tmp_path / "src.nii.gz", np.int16, 1.0, 0.0)
    image = load_ct(tmp_path / "src.nii.gz")
    first = write_image_atomic(tmp_path / f"a{suffix}", image.data, image)
    second = write_image_atomic(tmp_path / f"b{suffix}", image.data, image)
    assert first == sha256_file(tmp_path / f"a{suffix}")
    assert first == second  # no time stamp or temp name in the gzip header
    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / f"b{suffix}").dataobj), image.data)
