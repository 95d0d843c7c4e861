"""Robustness end to end: bad inputs and arguments, hostile models, kills, concurrency, fuzzing.

Every case goes through the command line (``cli.main`` in process, or ``run.py`` in a subprocess
for signals and concurrency) and checks the common promises of the README: the BEP027 exit code;
one clear ERROR line naming the file and the problem; no traceback without ``-v``; the other scans
still processed; the raw dataset byte-identical; no temporary or half-written file in the output.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctadeface.cli import main
from ctadeface.errors import InputError
from ctadeface.io import TEMP_MARKER, CTImage, load_ct

ROOT = Path(__file__).resolve().parent.parent
RUN_PY = ROOT / "run.py"
TINY_MODEL = ROOT / "tests" / "data" / "tiny_model" / "Dataset900_TinyFace"
TINY_FOLDER = TINY_MODEL / "nnUNetTrainer__nnUNetPlans__3d_fullres"
#: The tiny model, one thread; the face check after defacing (MTCNN) only in the inputs run.
VERIFIED_ARGS = ("--model", str(TINY_MODEL), "--nprocs", "1", "--device", "cpu")
MODEL_ARGS = (*VERIFIED_ARGS, "--no-verify")
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
#: Shape (i, j, k) and spacing (mm) of the phantoms: what the tiny model was trained on.
SHAPE, SPACING = (48, 52, 44), (4.0, 4.0, 4.0)


# --- building datasets --------------------------------------------------------------------------


def phantom_hu(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(HU float32 array (i, j, k), 4x4 affine voxel -> RAS+ mm) of a synthetic CTA head."""
    from ctadeface.training.phantom import make_phantom

    p = make_phantom(seed, shape=SHAPE, spacing=SPACING)
    return p.hu(), p.affine


def nifti(data: np.ndarray, affine: np.ndarray, slope: float = 1.0, inter: float = 0.0):
    """A NIfTI-1 image storing ``data`` as is, with scl_slope/scl_inter, units mm."""
    img = nib.Nifti1Image(data, affine, dtype=data.dtype)
    img.header.set_slope_inter(slope, inter)
    img.header.set_xyzt_units("mm", "sec")
    return img


def stored(hu: np.ndarray, dtype: str, slope: float = 1.0, inter: float = 0.0) -> np.ndarray:
    """HU -> stored values of ``dtype`` (rounded and clipped for integers)."""
    values = (hu.astype(np.float64) - inter) / slope
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        values = np.clip(np.rint(values), info.min, info.max)
    return values.astype(dtype)


def patch_header(path: Path, **fields: object) -> None:
    """Edit fields of the 348-byte NIfTI-1 header block of ``path`` in place (no checks)."""
    gz = path.name.endswith(".gz")
    raw = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
    header = nib.Nifti1Header(raw[:348], check=False)
    for key, value in fields.items():
        if isinstance(value, dict):  # {index: value} for array fields such as pixdim
            for index, item in value.items():
                header[key][index] = item
        else:
            header[key] = value
    new = header.binaryblock + raw[348:]
    path.write_bytes(gzip.compress(new) if gz else new)


def image_path(bids: Path, label: str) -> Path:
    return bids / f"sub-{label}" / "anat" / f"sub-{label}_ct.nii.gz"


def make_dataset(root: Path, images: dict[str, Callable[[Path], None]]) -> Path:
    """A raw BIDS dataset with one CT per participant: ``images[label](path)`` writes it."""
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "robustness", "BIDSVersion": "1.10.0", "DatasetType": "raw"})
    )
    (root / "ct.json").write_text(json.dumps({"Modality": "CT", "PatientName": "Doe^Jane"}))
    for label, write in images.items():
        path = image_path(root, label)
        path.parent.mkdir(parents=True)
        write(path)
    return root


def write_phantom(seed: int, dtype: str = "int16", slope: float = 1.0, inter: float = 0.0):
    def write(path: Path) -> None:
        hu, affine = phantom_hu(seed)
        nib.save(nifti(stored(hu, dtype, slope, inter), affine, slope, inter), path)

    return write


# --- checking the promises ----------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, str]:
    """relpath -> sha256 of every file (symlinks: their target), folders included by name."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            found[rel] = f"link:{os.readlink(path)}"
        elif path.is_file():
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            found[rel] = "folder"
    return found


def _strict_json(text: str) -> object:
    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def assert_outputs_valid(out: Path, *, temps_allowed: bool = False) -> None:
    """No temporary file; every image loads in full; every JSON parses (strict JSON)."""
    if not out.exists():
        return
    temps = [p for p in out.rglob("*") if TEMP_MARKER in p.name]
    assert temps_allowed or not temps, f"temporary files left: {temps}"
    for path in out.rglob("*.nii*"):
        if TEMP_MARKER in path.name:
            continue
        img = nib.load(str(path))
        assert np.asanyarray(img.dataobj).shape == img.shape, path
    for path in out.rglob("*.json"):
        if TEMP_MARKER not in path.name:
            _strict_json(path.read_text(encoding="utf-8"))


def defaced_path(out: Path, label: str) -> Path:
    return out / f"sub-{label}" / "anat" / f"sub-{label}_desc-defaced_ct.nii.gz"


def provenance(out: Path, label: str) -> dict:
    sidecar = defaced_path(out, label).with_name(f"sub-{label}_desc-defaced_ct.json")
    return json.loads(sidecar.read_text())["Defacing"]


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    def errors(self) -> list[str]:
        return [line for line in self.err.splitlines() if ": ERROR: " in line]

    def one_error_naming(self, *words: str) -> str:
        """The single ERROR line that holds every word of ``words``."""
        hits = [line for line in self.errors() if all(w in line for w in words)]
        assert len(hits) == 1, (words, self.err)
        return hits[0]


def run_cli(capsys, *argv: object) -> Run:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return Run(code, out, err)


def assert_robust(run: Run, code: int, raw: Path, raw_before: dict, out: Path) -> None:
    """The promises every case shares (exit code, no traceback, raw intact, outputs valid)."""
    assert run.code == code, run.err
    assert "Traceback" not in run.err
    stray = [line for line in run.err.splitlines() if not line.startswith("ctadeface: ")]
    assert not stray, f"lines not from the app on stderr: {stray}"
    assert snapshot(raw) == raw_before, "the raw dataset changed"
    assert_outputs_valid(out)


# --- inputs: one dataset holding every bad and odd input, defaced in one run --------------------


def _corrupt_gzip(path: Path) -> None:
    write_phantom(1)(path)
    raw = bytearray(path.read_bytes())
    raw[2] = 99  # compression method byte: not deflate
    path.write_bytes(bytes(raw))


def _truncated(path: Path) -> None:
    write_phantom(2)(path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _not_nifti(path: Path) -> None:
    path.write_bytes(gzip.compress(b"<html>this is a web page, not an image</html>\n" * 40))


def _small(data: np.ndarray, **fields: object) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        nib.save(nifti(data, np.diag([2.0, 2.0, 2.0, 1.0])), path)
        if fields:
            patch_header(path, **fields)

    return write


def _nonfinite(value: float) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        hu, affine = phantom_hu(3)
        hu[5, 6, 7] = value
        nib.save(nifti(hu.astype(np.float32), affine), path)

    return write


def _huge_grid(path: Path) -> None:
    header = nib.Nifti1Header()
    header.set_data_shape((20000, 20000, 20000))
    header.set_data_dtype(np.int16)
    path.write_bytes(gzip.compress(header.binaryblock + bytes(4) + bytes(4096)))


def _claims_more_than_it_holds(path: Path) -> None:
    header = nib.Nifti1Header()
    header.set_data_shape((1200, 1200, 1200))
    header.set_data_dtype(np.float32)
    path.write_bytes(gzip.compress(header.binaryblock + bytes(4) + bytes(4096)))


def _abdomen(path: Path) -> None:
    """An abdomen-like slab: water ellipse with a fat rim and a spine, in air (no face)."""
    i, j, _ = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    r = ((i - 24) / 20.0) ** 2 + ((j - 26) / 14.0) ** 2
    hu = np.where(r < 1, 40.0, -1000.0)
    hu = np.where((r > 0.8) & (r < 1), -100.0, hu)
    hu = np.where((i - 24) ** 2 + (j - 36) ** 2 < 9, 700.0, hu)
    nib.save(nifti(hu.astype(np.int16), np.diag([*SPACING, 1.0])), path)


def _all_air(path: Path) -> None:
    hu = np.full(SHAPE, -1000, dtype=np.int16)
    nib.save(nifti(hu, np.diag([*SPACING, 1.0])), path)


def _with_sidecar(content: bytes) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        write_phantom(4)(path)
        path.with_name(path.name.replace(".nii.gz", ".json")).write_bytes(content)

    return write


def _symlink_to_outside(path: Path) -> None:
    target = path.parents[3] / "elsewhere" / "scan.nii.gz"
    target.parent.mkdir(exist_ok=True)
    write_phantom(5)(target)
    path.symlink_to(target)


def _broken_symlink(path: Path) -> None:
    path.symlink_to(path.parents[3] / "elsewhere" / "gone.nii.gz")


def _codes_zero(path: Path) -> None:
    write_phantom(6)(path)
    patch_header(path, qform_code=0, sform_code=0)


def _singular(path: Path) -> None:
    write_phantom(7)(path)
    patch_header(path, qform_code=0, sform_code=1, srow_x=np.zeros(4))


def _pixdim(index: int, value: float) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        write_phantom(8)(path)
        patch_header(path, qform_code=0, sform_code=0, pixdim={index: value})

    return write


def _four_d_single_volume(path: Path) -> None:
    hu, affine = phantom_hu(9)
    nib.save(nifti(hu.astype(np.int16)[..., None], affine), path)


#: label -> (writer, None if the scan must be defaced, else words of its one ERROR line,
#: relpath (in the raw dataset) of the file the error names, "" for the image itself).
INPUT_CASES: dict[str, tuple[Callable[[Path], None], tuple[str, ...] | None, str]] = {
    "good": (write_phantom(10), None, ""),
    "uint8": (write_phantom(11, "uint8", 16.0, -1024.0), None, ""),
    "int16": (write_phantom(12, "int16"), None, ""),
    "float32": (write_phantom(13, "float32"), None, ""),
    "scaledint16": (write_phantom(14, "int16", 0.5, -1024.0), None, ""),
    "uint16": (write_phantom(15, "uint16", 1.0, -1024.0), None, ""),
    "codeszero": (_codes_zero, None, ""),
    "fourdsingle": (_four_d_single_volume, None, ""),
    "abdomen": (_abdomen, None, ""),
    "air": (_all_air, None, ""),
    "symlinked": (_symlink_to_outside, None, ""),
    "corruptgzip": (_corrupt_gzip, ("not a readable NIfTI",), ""),
    "truncated": (_truncated, ("truncated",), ""),
    "zerobyte": (lambda p: p.write_bytes(b""), ("empty file",), ""),
    "notnifti": (_not_nifti, ("not a NIfTI image",), ""),
    "twod": (_small(np.zeros((30, 30), np.int16)), ("not a 3D",), ""),
    "fourd": (_small(np.zeros((20, 20, 20, 3), np.int16)), ("not a 3D", "one volume"), ""),
    "nan": (_nonfinite(np.nan), ("NaN or infinite",), ""),
    "inf": (_nonfinite(-np.inf), ("NaN or infinite",), ""),
    "singular": (_singular, ("singular",), ""),
    "zeropixdim": (_pixdim(1, 0.0), ("pixdim",), ""),
    "negpixdim": (_pixdim(3, -2.0), ("pixdim",), ""),
    "hugegrid": (_huge_grid, ("grid",), ""),
    "overclaim": (_claims_more_than_it_holds, ("more than", "can hold"), ""),
    "badsidecar": (_with_sidecar(b'{"KVP": 120,'), ("invalid JSON",), ".json"),
    "latinsidecar": (_with_sidecar('{"Name": "Müller"}'.encode("latin-1")), ("UTF-8",), ".json"),
    "brokenlink": (_broken_symlink, ("broken symbolic link",), ""),
}
GOOD = sorted(k for k, (_, words, _) in INPUT_CASES.items() if words is None)
BAD = sorted(k for k, (_, words, _) in INPUT_CASES.items() if words is not None)


@dataclass(frozen=True)
class InputsRun:
    bids: Path
    out: Path
    raw_before: dict
    run: Run
    all_bad_out: Path
    all_bad: Run


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> InputsRun:
    """Every input case in one dataset; one participant-level run, then one over the bad only."""
    tmp = tmp_path_factory.mktemp("inputs")
    raw = {k: writer for k, (writer, _, _) in INPUT_CASES.items()}
    bids = make_dataset(tmp / "raw" / "bids", raw)
    raw_before = snapshot(bids.parent)  # the dataset and the symlink target outside it
    capture = _Capture()
    out = tmp / "out"
    with capture:
        code = main([str(bids), str(out), "participant", *VERIFIED_ARGS])
    run = Run(code, capture.out, capture.err)
    all_bad_out = tmp / "out-bad"
    with capture:
        code = main(
            [str(bids), str(all_bad_out), "participant", *MODEL_ARGS, "--participant-label", *BAD]
        )
    return InputsRun(bids, out, raw_before, run, all_bad_out, Run(code, capture.out, capture.err))


class _Capture:
    """stdout/stderr of a block (capsys is function-scoped; the fixture above is not)."""

    def __enter__(self) -> None:
        import io

        self._out, self._err = io.StringIO(), io.StringIO()
        self._redirects = contextlib.ExitStack()
        self._redirects.enter_context(contextlib.redirect_stdout(self._out))
        self._redirects.enter_context(contextlib.redirect_stderr(self._err))

    def __exit__(self, *exc: object) -> None:
        self._redirects.close()
        self.out, self.err = self._out.getvalue(), self._err.getvalue()


def test_inputs_run_exits_1_with_no_traceback_and_raw_untouched(inputs):
    assert_robust(inputs.run, 1, inputs.bids.parent, inputs.raw_before, inputs.out)
    assert len(inputs.run.errors()) == len(BAD), inputs.run.err
    summary = inputs.run.out.strip().splitlines()[-1]
    assert f"{len(INPUT_CASES)} CT scan(s)" in summary and f"{len(BAD)} failed" in summary


def test_only_bad_inputs_exit_65_each_named_once(inputs):
    run = inputs.all_bad
    assert_robust(run, 65, inputs.bids.parent, inputs.raw_before, inputs.all_bad_out)
    assert len(run.errors()) == len(BAD)
    for label in BAD:
        run.one_error_naming(f"sub-{label}")
    assert not list(inputs.all_bad_out.rglob("sub-*"))


@pytest.mark.parametrize("label", BAD)
def test_bad_input_gets_one_line_naming_the_file_and_the_problem(inputs, label):
    _, words, suffix = INPUT_CASES[label]
    named = f"sub-{label}/anat/sub-{label}_ct{suffix or '.nii.gz'}"
    line = inputs.run.one_error_naming(named, *words)
    assert len(line) < 400
    assert not (inputs.out / f"sub-{label}").exists()


@pytest.mark.parametrize("label", GOOD)
def test_odd_but_valid_input_is_defaced_keeping_dtype_scaling_and_header(inputs, label):
    source = load_ct(image_path(inputs.bids, label))
    result = load_ct(defaced_path(inputs.out, label))
    assert result.data.dtype == source.data.dtype
    assert (result.slope, result.inter) == (source.slope, source.inter)
    assert result.header["qform_code"] == source.header["qform_code"]
    assert result.header["sform_code"] == source.header["sform_code"]
    np.testing.assert_array_equal(result.affine, source.affine)
    mask_path = defaced_path(inputs.out, label).with_name(
        f"sub-{label}_space-orig_label-face_mask.nii.gz"
    )
    mask = np.asanyarray(nib.load(str(mask_path)).dataobj).astype(bool)
    np.testing.assert_array_equal(result.data[~mask], source.data[~mask])
    prov = provenance(inputs.out, label)
    done = {"defaced", "face-like", "identifiable"}  # the tiny model leaves faces to see
    # an empty mask removed nothing: a face there is still identifiable
    assert prov["Status"] in (done if prov["MaskVoxels"] else {"mask-empty", "identifiable"})
    assert not defaced_path(inputs.out, label).is_symlink()


def test_no_face_in_the_field_of_view_is_recorded_not_a_crash(tmp_path, capsys, monkeypatch):
    """The tiny model marks a few voxels even in air, so the model's answer for the no-face scan
    is forced empty here; what is tested is how the app records an empty mask."""
    from ctadeface.segment.segmenter import FaceSegmenter

    real = FaceSegmenter.predict

    def predict(self, volume: np.ndarray, spacing, *, slope=1.0, inter=0.0, affine=None):
        if float(volume.max()) * slope + inter <= -999:  # the all-air scan
            return np.zeros(volume.shape, dtype=bool)
        return real(self, volume, spacing, slope=slope, inter=inter, affine=affine)

    monkeypatch.setattr(FaceSegmenter, "predict", predict)
    bids = make_dataset(tmp_path / "bids", {"air": _all_air, "head": write_phantom(21)})
    before, out = snapshot(bids), tmp_path / "out"
    run = run_cli(capsys, bids, out, "participant", *MODEL_ARGS)
    assert_robust(run, 0, bids, before, out)
    prov = provenance(out, "air")
    assert prov["MaskVoxels"] == 0 and prov["Status"] == "mask-empty"
    assert provenance(out, "head")["Status"] == "defaced"
    assert any("sub-air" in line and "face mask is empty" in line for line in run.err.splitlines())
    np.testing.assert_array_equal(
        load_ct(defaced_path(out, "air")).data, load_ct(image_path(bids, "air")).data
    )
    assert run_cli(capsys, bids, out, "group").code == 0
    table = (out / "group_ct.tsv").read_text()
    assert "mask-empty" in table and "sub-head" in table


def test_the_group_level_lists_failed_and_empty_scans(inputs, capsys):
    run = run_cli(capsys, inputs.bids, inputs.out, "group")
    assert run.code == 0
    rows = (inputs.out / "group_ct.tsv").read_text().splitlines()
    assert len(rows) == 1 + len(INPUT_CASES)
    assert snapshot(inputs.bids.parent) == inputs.raw_before


def test_our_own_defaced_output_fed_back_in(inputs, tmp_path, capsys):
    def copy_output(path: Path) -> None:
        shutil.copyfile(defaced_path(inputs.out, "good"), path)

    bids = make_dataset(tmp_path / "bids", {"again": copy_output})
    before = snapshot(bids)
    out = tmp_path / "out"
    run = run_cli(capsys, bids, out, "participant", *MODEL_ARGS)
    assert_robust(run, 0, bids, before, out)
    again = load_ct(defaced_path(out, "again"))
    first = load_ct(defaced_path(inputs.out, "good"))
    assert again.data.dtype == first.data.dtype
    assert provenance(out, "again")["Status"] in {"mask-empty", "defaced"}


def test_a_derivative_file_name_in_the_raw_dataset_is_ignored_with_a_warning(tmp_path, capsys):
    bids = make_dataset(tmp_path / "bids", {})
    odd = bids / "sub-x" / "anat" / "sub-x_desc-defaced_ct.nii.gz"
    odd.parent.mkdir(parents=True)
    write_phantom(20)(odd)
    before = snapshot(bids)
    run = run_cli(capsys, bids, tmp_path / "out", "participant", *MODEL_ARGS)
    assert_robust(run, 66, bids, before, tmp_path / "out")
    assert any(
        "sub-x_desc-defaced_ct.nii.gz" in line and "desc" in line for line in run.err.splitlines()
    )


def test_nan_in_a_sidecar_gives_strict_json_outputs(tmp_path, capsys):
    bids = make_dataset(
        tmp_path / "bids", {"nanmeta": _with_sidecar(b'{"KVP": NaN, "X": -Infinity}')}
    )
    before = snapshot(bids)
    out = tmp_path / "out"
    run = run_cli(capsys, bids, out, "participant", *MODEL_ARGS)
    assert_robust(run, 0, bids, before, out)
    sidecar = json.loads(
        defaced_path(out, "nanmeta").with_suffix("").with_suffix(".json").read_text()
    )
    assert sidecar["KVP"] is None and sidecar["X"] is None


# --- arguments ----------------------------------------------------------------------------------


@pytest.fixture
def small(tmp_path) -> Path:
    """Two participants of phantoms (no model is loaded by the argument checks)."""
    return make_dataset(tmp_path / "raw", {"a": write_phantom(30), "b": write_phantom(31)})


@pytest.mark.parametrize(
    ("extra", "code", "words"),
    [
        (["--participant-label", "../x"], 64, ["'../x'"]),
        (["--participant-label", "sub-../../etc"], 64, ["../../etc"]),
        (["--participant-label", "a*"], 64, ["'a*'"]),
        (["--participant-label", "*"], 64, ["'*'"]),
        (["--participant-label", "a/b"], 64, ["'a/b'"]),
        (["--participant-label", ""], 64, ["''"]),
        (["--session-label", "../1"], 64, ["'../1'"]),
        (["--participant-label", "zz"], 66, ["sub-zz"]),
        (["--model", "no-such-model"], 64, ["no-such-model"]),
    ],
)
def test_bad_arguments_exit_with_one_line_and_write_nothing(
    capsys, small, tmp_path, extra, code, words
):
    before, out = snapshot(small.parent), tmp_path / "out"
    run = run_cli(capsys, small, out, "participant", "--nprocs", "1", *extra)
    assert run.code == code
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and all(w in lines[0] for w in words), run.err
    assert snapshot(small.parent) == before and not out.exists()


@pytest.mark.parametrize("where", [".", "sub-a", "sub-a/anat", "code/out"])
def test_output_equal_to_or_inside_the_raw_dataset_is_refused(capsys, small, where):
    before = snapshot(small)
    run = run_cli(capsys, small, small / where, "participant", *MODEL_ARGS)
    assert run.code == 64 and "output_dir" in run.one_error_naming("must not be the raw dataset")
    assert snapshot(small) == before


def test_output_inside_raw_through_a_symlink_is_refused(capsys, small, tmp_path):
    link = tmp_path / "link-to-raw"
    link.symlink_to(small)
    before = snapshot(small)
    run = run_cli(capsys, small, link / "out", "participant", *MODEL_ARGS)
    assert run.code == 64 and snapshot(small) == before


@pytest.mark.parametrize("kind", ["under-a-file", "is-a-file"])
def test_output_that_cannot_be_written_exits_73(capsys, small, tmp_path, kind):
    """As root no permission bit stops us: a regular file where a folder must be does."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file\n")
    out = blocker / "out" if kind == "under-a-file" else blocker
    before = snapshot(small)
    run = run_cli(capsys, small, out, "participant", *MODEL_ARGS)
    assert run.code == 73
    run.one_error_naming(str(blocker))
    assert snapshot(small) == before and blocker.read_text() == "a regular file\n"


def _copy_tiny(dest: Path) -> Path:
    """A copy of the tiny model's trained-model folder; returns that folder."""
    shutil.copytree(TINY_FOLDER, dest)
    return dest


@pytest.mark.parametrize(
    ("remove", "words"),
    [
        ("plans.json", ["not an nnU-Net model folder"]),
        ("dataset.json", ["dataset.json missing"]),
        ("fold_all/checkpoint_final.pth", ["checkpoint_final.pth"]),
    ],
)
def test_model_folder_missing_files_is_refused(capsys, small, tmp_path, remove, words):
    model = _copy_tiny(tmp_path / "Dataset900_X" / "nnUNetTrainer__nnUNetPlans__3d_fullres")
    (model / remove).unlink()
    before, out = snapshot(small), tmp_path / "out"
    run = run_cli(capsys, small, out, "participant", "--model", model, "--nprocs", "1")
    assert run.code == 64
    run.one_error_naming(*words)
    assert snapshot(small) == before and not out.exists()


def _zip_with(path: Path, member: zipfile.ZipInfo | str, payload: bytes = b"x") -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for file in sorted(TINY_FOLDER.rglob("*")):
            if file.is_file():
                rel = file.relative_to(TINY_MODEL.parent)
                archive.write(file, str(rel))
        archive.writestr(member, payload)
    return path


def _symlink_member(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = 0o120777 << 16  # a symbolic link
    return info


@pytest.mark.parametrize(
    ("member", "words"),
    [
        ("../../escaped.txt", ["'..'"]),
        ("Dataset900_TinyFace/../../escaped.txt", ["'..'"]),
        ("/tmp/ctadeface-escaped-absolute.txt", ["absolute"]),
        (_symlink_member("Dataset900_TinyFace/link"), ["symbolic link"]),
    ],
)
def test_model_zip_with_hostile_members_writes_nothing_outside_the_cache(
    capsys, small, tmp_path, member, words
):
    zip_path = _zip_with(tmp_path / "model.zip", member, b"/etc/passwd")
    work = tmp_path / "work" / "deep"
    work.mkdir(parents=True)
    outside_before = snapshot(tmp_path)
    run = run_cli(capsys, small, tmp_path / "out", "participant", "--model", zip_path, "-w", work)
    assert run.code == 64
    line = run.one_error_naming("model.zip", *words)
    assert "refusing" in line
    assert snapshot(tmp_path) == outside_before  # nothing unpacked anywhere, not even the cache
    assert not Path("/tmp/ctadeface-escaped-absolute.txt").exists()


class _Evil:
    """Unpickling this creates a file: what a hostile checkpoint could do."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def _evil_checkpoint(path: Path, target: Path) -> None:
    import torch

    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    checkpoint["init_args"]["payload"] = _Evil(target)
    torch.save(checkpoint, path)


def test_user_model_with_a_code_running_checkpoint_is_refused_unloaded(capsys, small, tmp_path):
    model = _copy_tiny(tmp_path / "Dataset900_X" / "nnUNetTrainer__nnUNetPlans__3d_fullres")
    pwned = tmp_path / "pwned"
    _evil_checkpoint(model / "fold_all" / "checkpoint_final.pth", pwned)
    before, out = snapshot(small), tmp_path / "out"
    run = run_cli(capsys, small, out, "participant", "--model", model, "--nprocs", "1")
    assert run.code == 64
    run.one_error_naming("refusing checkpoint", "checkpoint_final.pth")
    assert not pwned.exists()
    assert snapshot(small) == before and not list(out.rglob("sub-*"))
    assert_outputs_valid(out)


def test_registry_model_with_a_wrong_sha256_is_refused_before_loading(
    capsys, small, tmp_path, monkeypatch
):
    """A pinned registry model whose checkpoint was swapped (same size, other bytes, hostile)."""
    from ctadeface.io import sha256_file
    from ctadeface.segment import models

    entry_rel = "Dataset900_TinyFace/nnUNetTrainer__nnUNetPlans__3d_fullres"
    folder = _copy_tiny(tmp_path / "models" / "pinned" / entry_rel)
    checkpoint = folder / "fold_all" / "checkpoint_final.pth"
    files = {
        rel: (p.stat().st_size, sha256_file(p))
        for rel, p in ((str(p.relative_to(folder)), p) for p in folder.rglob("*") if p.is_file())
    }
    entry = models.RegistryEntry(
        name="pinned", description="test", licence="test", sources=("test",),
        relpath=entry_rel, files=files, home=tmp_path / "models",
    )  # fmt: skip
    monkeypatch.setattr(models, "REGISTRY", {**models.REGISTRY, "pinned": entry})
    monkeypatch.setenv(models.MODELS_DIR_ENV, str(tmp_path / "models"))
    pwned = tmp_path / "pwned"
    _evil_checkpoint(checkpoint, pwned)
    size = files["fold_all/checkpoint_final.pth"][0]
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[:size].ljust(size, b"\0"))  # same size as pinned, other bytes
    before, out = snapshot(small), tmp_path / "out"
    run = run_cli(capsys, small, out, "participant", "--model", "pinned", "--nprocs", "1")
    assert run.code == 64
    run.one_error_naming("pinned", "sha256", "checkpoint_final.pth")
    assert not pwned.exists() and not out.exists()
    assert snapshot(small) == before


# --- faults: kills, interrupts, a full disk, concurrent runs ------------------------------------

#: ``python -c`` program: the app, with every NIfTI write held for a while after the bytes are
#: written (a slow disk), so that a signal lands while an output is still a temporary file.
SLOW_DISK_APP = """
import signal, sys, time
import nibabel
signal.signal(signal.SIGINT, signal.default_int_handler)
real_write = nibabel.Nifti1Image.to_file_map
def slow_write(img, *args, **kwargs):
    real_write(img, *args, **kwargs)
    time.sleep(0.4)
nibabel.Nifti1Image.to_file_map = slow_write
from ctadeface.cli import main
sys.exit(main())
"""


def _start(argv: list[object], program: str | None = None) -> subprocess.Popen:
    command = [sys.executable, "-c", program] if program else [sys.executable, str(RUN_PY)]
    return subprocess.Popen(
        [*command, *(str(a) for a in argv)],
        cwd=ROOT,
        env=SUBPROCESS_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(condition: Callable[[], bool], proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended first ({proc.returncode}): {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the run")
        time.sleep(0.02)


def _temps(out: Path, suffix: str = "") -> list[Path]:
    if not out.exists():
        return []
    return [p for p in out.rglob(f"*{suffix}") if TEMP_MARKER in p.name]


@pytest.fixture
def three(tmp_path) -> Path:
    return make_dataset(
        tmp_path / "raw", {f"k{n}": write_phantom(40 + n, "int16", 0.5, -1024.0) for n in range(3)}
    )


def test_sigkill_mid_write_then_a_rerun_completes(three, tmp_path, capsys):
    before, out = snapshot(three), tmp_path / "out"
    proc = _start([three, out, "participant", *MODEL_ARGS], SLOW_DISK_APP)
    _wait_for(lambda: defaced_path(out, "k0").exists() and bool(_temps(out, ".nii.gz")), proc)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert _temps(out), "the kill did not land during a write"
    assert_outputs_valid(out, temps_allowed=True)  # renamed files are whole; temps are hidden
    assert snapshot(three) == before

    run = run_cli(capsys, three, out, "participant", *MODEL_ARGS)
    assert_robust(run, 0, three, before, out)
    assert "1 skipped" in run.out and "2 defaced" in run.out
    for label in ("k0", "k1", "k2"):
        assert load_ct(defaced_path(out, label)).slope == 0.5


@pytest.mark.parametrize(
    ("signum", "code", "word"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
)
def test_interrupt_mid_write_stops_cleanly(three, tmp_path, signum, code, word):
    before, out = snapshot(three), tmp_path / "out"
    proc = _start([three, out, "participant", *MODEL_ARGS], SLOW_DISK_APP)
    _wait_for(lambda: bool(_temps(out, ".nii.gz")), proc)  # an image being written
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if "ERROR" in line] == [f"ctadeface: ERROR: {word}"]
    assert snapshot(three) == before
    assert_outputs_valid(out)
    assert not _temps(out)


@pytest.mark.parametrize("what", ["image", "sidecar"])
def test_disk_full_while_writing(three, tmp_path, capsys, monkeypatch, what):
    """ENOSPC after some bytes reached the disk: exit 73, one line, no partial file left."""
    before, out = snapshot(three), tmp_path / "out"
    real_write_image, real_write_text = nib.Nifti1Image.to_file_map, Path.write_text
    calls = {"n": 0}

    def full(path: Path) -> None:
        calls["n"] += 1
        if calls["n"] >= 3:  # the first scan's writes succeed
            with open(path, "wb") as fh:
                fh.write(b"\x1f\x8b partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    def write_image(img, file_map=None, **kwargs):  # under nib.save and to_stream alike
        holder = (file_map or img.file_map)["image"]
        if holder.fileobj is None:
            full(Path(holder.filename))
        elif calls["n"] + 1 >= 3:  # a stream: some bytes reach the (temporary) file first
            calls["n"] += 1
            holder.fileobj.write(b"partial")
            holder.fileobj.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        else:
            calls["n"] += 1
        return real_write_image(img, file_map, **kwargs)

    def write_text(self: Path, text: str, *args, **kwargs):
        if TEMP_MARKER in self.name and "_desc-defaced_" in self.name:
            full(self)
        return real_write_text(self, text, *args, **kwargs)

    if what == "image":
        monkeypatch.setattr(nib.Nifti1Image, "to_file_map", write_image)
    else:
        calls["n"] = 1
        monkeypatch.setattr(Path, "write_text", write_text)
    run = run_cli(capsys, three, out, "participant", *MODEL_ARGS)
    assert_robust(run, 73, three, before, out)
    line = run.one_error_naming("sub-k1", "No space left on device")
    assert "cannot write" in line and len(run.errors()) == 1
    k1_json = defaced_path(out, "k1").with_name("sub-k1_desc-defaced_ct.json")
    assert defaced_path(out, "k0").exists() and not k1_json.exists()
    assert defaced_path(out, "k1").exists() == (what == "sidecar")  # whole, but not committed
    assert not (out / "sub-k2").exists()  # a full disk ends the run

    monkeypatch.undo()
    run = run_cli(capsys, three, out, "participant", *MODEL_ARGS)
    assert_robust(run, 0, three, before, out)
    assert "1 skipped" in run.out and "2 defaced" in run.out


def test_eight_processes_share_one_output_folder(tmp_path, capsys):
    labels = [f"c{n}" for n in range(8)]
    raw = make_dataset(
        tmp_path / "raw", {label: write_phantom(50 + n) for n, label in enumerate(labels)}
    )
    before, out = snapshot(raw), tmp_path / "out"
    procs = [
        _start([raw, out, "participant", *MODEL_ARGS, "--participant-label", label])
        for label in labels
    ]
    results = [p.communicate(timeout=400) for p in procs]
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
        assert "Traceback" not in err and "ERROR" not in err
    assert snapshot(raw) == before
    assert_outputs_valid(out)
    description = json.loads((out / "dataset_description.json").read_text())
    assert (
        description["DatasetType"] == "derivative"
        and description["GeneratedBy"][0]["Name"] == "ctadeface"
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "dataset_description.json",
        "logs",
        *(f"sub-{x}" for x in labels),
    ]
    logs = sorted(p.name for p in (out / "logs").iterdir())
    assert logs.count("CITATION.md") == 1 and len(logs) == 1 + 8
    for label in labels:
        assert provenance(out, label)["Status"] in {"defaced", "mask-empty"}

    run = run_cli(capsys, raw, out, "group")
    assert run.code == 0
    rows = (out / "group_ct.tsv").read_text().splitlines()[1:]
    assert sorted(r.split("\t")[0] for r in rows) == [f"sub-{x}" for x in labels]
    assert all("\tmissing\t" not in r for r in rows)


# --- property: any header and small array, never an unhandled exception ----------------------


_DTYPES = ("int8", "uint8", "int16", "uint16", "int32", "float32", "float64")
_ODD_FLOATS = st.sampled_from(
    [0.0, -0.0, 1.0, 0.5, 2.5, -1.0, -2.0, 1e-30, 1e30, 3.4e38, np.nan, np.inf, -np.inf]
)


@st.composite
def nifti_files(draw) -> tuple[bytes, str]:
    """(file bytes, file name) of a small NIfTI-1 image with a randomly edited header."""
    dtype = draw(st.sampled_from(_DTYPES))
    ndim = draw(st.sampled_from([3, 3, 3, 3, 1, 2, 4, 5]))
    shape = tuple(
        draw(st.lists(st.integers(1, 7) | st.integers(2, 7), min_size=ndim, max_size=ndim))
    )
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    values = rng.normal(0, 1000, size=shape)
    if np.dtype(dtype).kind == "f":
        data = values.astype(dtype)
        if draw(st.booleans()):
            data.flat[0] = draw(_ODD_FLOATS)
    else:
        info = np.iinfo(dtype)
        data = np.clip(values, info.min, info.max).astype(dtype)
    img = nib.Nifti1Image(data, np.diag([1.0, 1.0, 1.0, 1.0]), dtype=np.dtype(dtype))
    raw = img.to_bytes()
    header = nib.Nifti1Header(raw[:348], check=False)
    for index in draw(st.lists(st.integers(1, 3), max_size=3)):
        header["pixdim"][index] = draw(_ODD_FLOATS)
    if draw(st.booleans()):
        header["qform_code"] = draw(st.sampled_from([0, 1, 2, 3, 4, 5, -1, 255]))
        header["sform_code"] = draw(st.sampled_from([0, 1, 2, 3, 4, 5, -1, 255]))
    if draw(st.booleans()):
        header["srow_x"][draw(st.integers(0, 3))] = draw(_ODD_FLOATS)
        header["quatern_b"] = draw(_ODD_FLOATS)
    if draw(st.booleans()):
        header["scl_slope"] = draw(_ODD_FLOATS)
        header["scl_inter"] = draw(_ODD_FLOATS)
    rarely = st.integers(0, 5).map(lambda n: n == 0)
    if draw(rarely):
        header["dim"][draw(st.integers(0, 7))] = draw(st.sampled_from([-1, 0, 1, 3, 8, 32767]))
    if draw(rarely):
        header["datatype"] = draw(st.sampled_from([0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 1536, 999]))
    if draw(rarely):
        header["vox_offset"] = draw(st.sampled_from([0.0, 348.0, 352.0, 1e9, -5.0, np.nan]))
    body = header.binaryblock + raw[348:]
    if draw(rarely):
        body = body[: draw(st.integers(0, len(body)))]
    gz = draw(st.booleans())
    return (gzip.compress(body) if gz else body), ("x.nii.gz" if gz else "x.nii")


# the headers are broken on purpose: nibabel warns of an overflow while it reads some of them
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nifti_files())
def test_load_ct_either_loads_or_raises_input_error(case):
    """And what it accepts goes through fill and write and reads back identical."""
    from ctadeface.deface.fill import apply_fill, choose_fill
    from ctadeface.io import write_image_atomic

    content, name = case
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(content)
        try:
            image = load_ct(path)
        except InputError as e:
            assert str(e).startswith(str(path)) and "\n" not in str(e)
            return
        assert isinstance(image, CTImage) and image.data.ndim == 3
        hu = image.hu()
        assert hu.shape == image.data.shape and hu.dtype == np.float32
        assert all(np.isfinite(s) and s > 0 for s in image.spacing)
        mask = np.zeros(image.data.shape, dtype=bool)
        mask.flat[::3] = True
        for policy in ("p10", "air"):
            out = apply_fill(image, mask, choose_fill(image, policy))
            target = Path(folder) / f"out-{policy}{'.nii.gz' if name.endswith('.gz') else '.nii'}"
            write_image_atomic(target, out, image)
            back = load_ct(target)
            np.testing.assert_array_equal(back.data, out)
            assert (back.slope, back.inter) == (image.slope, image.inter)
        assert not [p for p in Path(folder).iterdir() if TEMP_MARKER in p.name]


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(nifti_files(), min_size=3, max_size=3))
def test_cli_on_fuzzed_images_never_crashes(cases):
    """Three fuzzed images next to a phantom head: every scan is defaced or named in one line."""
    with tempfile.TemporaryDirectory() as folder:
        writers = {"head": write_phantom(60)}
        for n, (content, name) in enumerate(cases):
            gz = content if name.endswith(".gz") else gzip.compress(content)
            writers[f"f{n}"] = lambda p, c=gz: p.write_bytes(c)
        bids = make_dataset(Path(folder) / "raw", writers)
        before, out = snapshot(bids), Path(folder) / "out"
        capture = _Capture()
        with capture:
            code = main([str(bids), str(out), "participant", *MODEL_ARGS])
        run = Run(code, capture.out, capture.err)
        assert run.code in (0, 1), run.err
        assert_robust(run, run.code, bids, before, out)
        assert defaced_path(out, "head").exists()
        for label in writers:
            if not defaced_path(out, label).exists():
                run.one_error_naming(f"sub-{label}_ct.nii.gz")
