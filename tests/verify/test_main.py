"""Tests of ``python -m ctadeface.verify`` (ctadeface.verify.__main__): one JSON object, exit
codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from ctadeface.errors import InputError
from ctadeface.training.phantom import Phantom
from ctadeface.verify import __main__ as verify_cli


def test_cli_same_file_twice_is_identifiable(
    phantom: Phantom, tmp_path: Path, no_facenet: dict[str, str], capsys, monkeypatch
) -> None:
    for k, v in no_facenet.items():
        monkeypatch.setenv(k, v)
    orig = write_nifti(phantom, tmp_path / "orig.nii.gz")
    assert verify_cli.main([str(orig), str(orig)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    js = json.loads(out[0])
    assert js["Status"] == "identifiable" and js["FacePAfter"] == js["FacePBefore"] >= 0.5
    assert js["Identity"]["Rank1Views"] == js["Identity"]["ViewsTested"] > 0
    assert js["FaceNetSimilarity"] is None and js["MaskMode"] == "face"


def test_cli_defaced_exits_0_and_writes_png(
    phantom: Phantom, tmp_path: Path, no_facenet: dict[str, str], capsys, monkeypatch
) -> None:
    from PIL import Image

    for k, v in no_facenet.items():
        monkeypatch.setenv(k, v)
    hu = phantom.hu()
    hu[phantom.face] = -1000.0
    orig = write_nifti(phantom, tmp_path / "orig.nii.gz")
    defaced = write_nifti(phantom, tmp_path / "defaced.nii.gz", hu)
    png = tmp_path / "fig.png"
    code = verify_cli.main([str(orig), str(defaced), "--png", str(png), "--mask", "strict"])
    js = json.loads(capsys.readouterr().out)
    assert js["MaskMode"] == "strict" and js["Status"] in ("defaced", "face-like", "identifiable")
    assert code == (0 if js["Status"] == "defaced" else 1)  # strict: face-like fails too
    assert js["FacePAfter"] < js["FacePBefore"] and js["PNG"] == str(png)
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 0


def test_cli_grid_mismatch_is_one_line(phantom: Phantom, tmp_path: Path) -> None:
    orig = write_nifti(phantom, tmp_path / "orig.nii.gz")
    small = tmp_path / "small.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.int16), phantom.affine), str(small))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run(
        [sys.executable, "-m", "ctadeface.verify", str(orig), str(small)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert p.returncode == InputError.exit_code and p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "small.nii.gz" in lines[0] and "Traceback" not in p.stderr


def test_cli_bad_usage_and_missing_file(tmp_path: Path, capsys) -> None:
    assert verify_cli.main(["only-one"]) == 64
    assert verify_cli.main([str(tmp_path / "a.nii"), str(tmp_path / "b.nii")]) == 65
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "a.nii" in err[1]


def write_nifti(p: Phantom, path: Path, hu: np.ndarray | None = None) -> Path:
    img = p.to_nifti()
    if hu is not None:
        img = nib.Nifti1Image(hu.astype(np.float32), p.affine)
    nib.save(img, str(path))
    return path
