"""Tests of ctadeface.segment.models: registry, model folders, safe model zips, the listing."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from types import MappingProxyType

import pytest

from ctadeface.errors import ModelError
from ctadeface.segment import models
from ctadeface.segment.models import REGISTRY, RegistryEntry, resolve_model

TRAINED = "nnUNetTrainer__nnUNetPlans__3d_fullres"


def make_folder(root: Path, dataset: str = "Dataset900_Tiny", folds: tuple[str, ...] = ("all",)):
    """A model folder with placeholder files (resolve_model checks, never loads)."""
    folder = root / dataset / TRAINED
    folder.mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps({"configurations": {"3d_fullres": {}}}))
    (folder / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "face": 1}}))
    for fold in folds:
        (folder / f"fold_{fold}").mkdir()
        (folder / f"fold_{fold}" / "checkpoint_final.pth").write_bytes(f"weights {fold}".encode())
    return folder


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


# --- folders ----------------------------------------------------------------------------------


@pytest.mark.parametrize("level", [0, 1, 2])
def test_folder_itself_dataset_folder_or_results_root(tmp_path: Path, level: int) -> None:
    folder = make_folder(tmp_path / "results")
    given = [folder, folder.parent, folder.parent.parent][level]
    spec = resolve_model(str(given), tmp_path / "cache")
    assert spec.folder == folder.resolve()
    assert spec.name == str(given)
    assert (spec.trainer, spec.plans_name, spec.configuration) == (
        "nnUNetTrainer",
        "nnUNetPlans",
        "3d_fullres",
    )
    assert spec.folds == ("all",)
    assert spec.checkpoint_sha256 == {"fold_all/checkpoint_final.pth": sha(b"weights all")}
    assert not spec.pinned


@pytest.mark.parametrize(
    ("record", "expected"),
    [(None, None), ({"recipe": {}}, None), ({"input_orientation": "ras"}, "RAS")],
)
def test_input_orientation_comes_from_the_training_record(
    tmp_path: Path, record: dict | None, expected: str | None
) -> None:
    folder = make_folder(tmp_path)
    if record is not None:
        (folder / "ctadeface_training.json").write_text(json.dumps(record))
    assert resolve_model(str(folder), tmp_path / "cache").orientation == expected


@pytest.mark.parametrize("text", ['{"input_orientation": "XYZ"}', "[1, 2]", "{not json"])
def test_unreadable_input_orientation_is_refused(tmp_path: Path, text: str) -> None:
    folder = make_folder(tmp_path)
    (folder / "ctadeface_training.json").write_text(text)
    with pytest.raises(ModelError, match=r"ctadeface_training\.json: unreadable input_orientation"):
        resolve_model(str(folder), tmp_path / "cache")


def test_numeric_folds_when_no_fold_all(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, folds=("3", "0", "10"))
    spec = resolve_model(str(folder), tmp_path / "cache")
    assert spec.folds == ("0", "3", "10")
    assert set(spec.checkpoint_sha256) == {f"fold_{f}/checkpoint_final.pth" for f in spec.folds}


def test_fold_all_wins_over_numeric_folds(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, folds=("0", "all"))
    assert resolve_model(str(folder), tmp_path / "cache").folds == ("all",)


@pytest.mark.parametrize(
    ("remove", "message"),
    [
        ("dataset.json", "dataset.json missing"),
        ("fold_all/checkpoint_final.pth", "no fold_all/checkpoint_final.pth"),
        ("plans.json", "not an nnU-Net model folder"),
    ],
)
def test_incomplete_folder_is_refused(tmp_path: Path, remove: str, message: str) -> None:
    folder = make_folder(tmp_path)
    (folder / remove).unlink()
    with pytest.raises(ModelError, match=message) as err:
        resolve_model(str(folder), tmp_path / "cache")
    assert "\n" not in str(err.value)


def test_several_model_folders_are_ambiguous(tmp_path: Path) -> None:
    make_folder(tmp_path, "Dataset900_A")
    make_folder(tmp_path, "Dataset901_B")
    with pytest.raises(ModelError, match=r"several nnU-Net model folders.*Dataset900_A"):
        resolve_model(str(tmp_path), tmp_path / "cache")


def test_unknown_spec_is_refused(tmp_path: Path) -> None:
    (tmp_path / "weights.pth").write_bytes(b"x")
    for spec in ("no-such-model", str(tmp_path / "weights.pth"), str(tmp_path / "absent.zip")):
        with pytest.raises(ModelError, match="neither a known model name"):
            resolve_model(spec, tmp_path / "cache")


# --- registry ---------------------------------------------------------------------------------


def test_registry_is_immutable_and_pins_the_published_files() -> None:
    entry = REGISTRY["cta-deface"]
    with pytest.raises(TypeError):
        REGISTRY["x"] = entry  # type: ignore[index]
    assert entry.relpath == "Dataset001_DEFACE/" + TRAINED
    assert entry.files["fold_all/checkpoint_final.pth"] == (
        250036859,
        "265afd7a1592cd4c43d093b40aa7fbe231a759ab900bba45a84798dfea90e1e5",
    )
    assert set(entry.files) == {
        "fold_all/checkpoint_final.pth",
        "plans.json",
        "dataset.json",
        "dataset_fingerprint.json",
    }
    assert REGISTRY["open"].licence == "Apache-2.0"


def test_missing_registry_model_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as err:
        resolve_model("cta-deface", tmp_path / "cache", roots=[tmp_path / "models"])
    text = str(err.value)
    assert "not installed" in text
    assert str(tmp_path / "models" / "cta-deface") in text
    assert "github.com/CCI-Bonn/CTA-DEFACE" in text
    assert "Docker" in text
    assert "\n" not in text


def test_default_roots_order() -> None:
    roots = models.default_roots({"CTADEFACE_MODELS_DIR": "/somewhere"})
    assert roots == (Path("/somewhere"), models.PACKAGE_MODELS_DIR, models.OPT_MODELS_DIR)
    assert models.default_roots({}) == (models.PACKAGE_MODELS_DIR, models.OPT_MODELS_DIR)


def _pinned_entry(folder: Path, relpath: str, tamper: str | None = None) -> RegistryEntry:
    files = {}
    for rel in ("plans.json", "dataset.json", "fold_all/checkpoint_final.pth"):
        data = (folder / rel).read_bytes()
        digest = sha(data) if rel != tamper else sha(b"something else")
        files[rel] = (len(data), digest)
    return RegistryEntry(
        name="tiny",
        description="test",
        licence="test licence",
        sources=("nowhere",),
        relpath=relpath,
        files=MappingProxyType(files),
        home=folder,
    )


def test_registry_model_with_matching_pins_resolves(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "root" / "tiny")
    entry = _pinned_entry(folder, f"Dataset900_Tiny/{TRAINED}")
    spec = models.resolve_registry_entry(entry, [tmp_path / "elsewhere", tmp_path / "root"])
    assert spec.folder == folder.resolve()
    assert spec.pinned
    assert spec.licence == "test licence"
    assert spec.name == "tiny"


def test_sha256_mismatch_is_refused_before_loading(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "root" / "tiny")
    entry = _pinned_entry(
        folder, f"Dataset900_Tiny/{TRAINED}", tamper="fold_all/checkpoint_final.pth"
    )
    # the checkpoint is not a torch file: any attempt to load it would fail differently
    with pytest.raises(
        ModelError, match=r"checkpoint_final\.pth has sha256 [0-9a-f]{64}, expected"
    ):
        models.resolve_registry_entry(entry, [tmp_path / "root"])


def test_size_mismatch_and_missing_pinned_file(tmp_path: Path) -> None:
    root = tmp_path / "models"
    folder = make_folder(root / "cta-deface", dataset="Dataset001_DEFACE")
    with pytest.raises(ModelError, match=r"checkpoint_final\.pth has 11 bytes, expected 250036859"):
        resolve_model("cta-deface", tmp_path / "cache", roots=[root])
    (folder / "fold_all" / "checkpoint_final.pth").unlink()
    with pytest.raises(ModelError, match=r"incomplete.*checkpoint_final\.pth is missing"):
        resolve_model("cta-deface", tmp_path / "cache", roots=[root])


# --- zips -------------------------------------------------------------------------------------


def test_zip_made_by_nnunet_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nnunetv2.model_sharing.model_export import export_pretrained_model

    results = tmp_path / "results"
    folder = make_folder(results, "Dataset900_TinyFace")
    (folder / "dataset_fingerprint.json").write_text("{}")
    (folder / "fold_all" / "progress.png").write_bytes(b"png")
    (folder / "fold_all" / "validation").mkdir()
    (folder / "fold_all" / "validation" / "summary.json").write_text("{}")
    monkeypatch.setenv("nnUNet_results", str(results))
    archive = tmp_path / "model.zip"
    export_pretrained_model(
        "Dataset900_TinyFace", str(archive), configurations=("3d_fullres",), folds=("all",)
    )
    cache = tmp_path / "cache"
    spec = resolve_model(str(archive), cache)
    digest = sha(archive.read_bytes())
    assert spec.folder == (cache / "zips" / digest / "Dataset900_TinyFace" / TRAINED).resolve()
    assert spec.folds == ("all",)
    for rel in ("plans.json", "dataset.json", "fold_all/checkpoint_final.pth"):
        assert (spec.folder / rel).read_bytes() == (folder / rel).read_bytes()
    assert tree(cache) == {"zips", f"zips/{digest}"} | {
        f"zips/{digest}/{p}" for p in tree(cache / "zips" / digest)
    }
    assert resolve_model(str(archive), cache).folder == spec.folder  # reuses the unpacked copy


# --- listing ----------------------------------------------------------------------------------


def test_listing_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = make_folder(tmp_path / "open", dataset=REGISTRY["open"].relpath.split("/")[0])
    assert models.main(["--models-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split("\t")[0]: line.split("\t") for line in lines}
    assert set(rows) == set(REGISTRY)
    assert all(len(r) == 5 for r in rows.values())
    assert rows["open"][1:4] == ["present", str(folder), sha(b"weights all")]
    assert rows["open"][4] == "Apache-2.0"
    assert rows["cta-deface"][1] == "missing"
    assert rows["cta-deface"][3] == REGISTRY["cta-deface"].files["fold_all/checkpoint_final.pth"][1]
    assert "no licence file" in rows["cta-deface"][4]


def test_listing_as_module(tmp_path: Path) -> None:
    env = dict(os.environ, CTADEFACE_MODELS_DIR=str(tmp_path))
    out = subprocess.run(
        [sys.executable, "-m", "ctadeface.segment.models"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=60,
    ).stdout
    names = [line.split("\t")[0] for line in out.splitlines()]
    assert names == list(REGISTRY)
    assert all(line.split("\t")[1] in ("present", "missing") for line in out.splitlines())


# --- build-time install -----------------------------------------------------------------------


def _entry_pinning(folder: Path) -> RegistryEntry:
    files = {
        rel: ((folder / rel).stat().st_size, sha((folder / rel).read_bytes()))
        for rel in ("plans.json", "dataset.json", "fold_all/checkpoint_final.pth")
    }
    return RegistryEntry(
        name="pinned",
        description="test",
        licence="test",
        sources=("nowhere",),
        relpath=f"Dataset900_Tiny/{TRAINED}",
        files=MappingProxyType(files),
        home=folder,
    )


def _zip_folder(folder: Path, zip_path: Path) -> Path:
    with zipfile.ZipFile(zip_path, "w") as archive:
        for p in folder.rglob("*"):
            archive.write(p, str(p.relative_to(folder.parent.parent.parent)))
    return zip_path


@pytest.mark.parametrize("as_zip", [True, False])
def test_install_verifies_pins_and_lands_in_the_registry_layout(tmp_path: Path, as_zip) -> None:
    folder = make_folder(tmp_path / "src" / "nested")
    entry = _entry_pinning(folder)
    source = _zip_folder(folder, tmp_path / "model.zip") if as_zip else folder.parent.parent
    checkpoint = entry.files["fold_all/checkpoint_final.pth"][1]
    target = models.install_registry_model(
        entry, str(source), tmp_path / "models", expect_checkpoint=checkpoint
    )
    assert target == tmp_path / "models" / "pinned" / entry.relpath
    assert tree(target) == tree(folder)
    assert models.resolve_registry_entry(entry, [tmp_path / "models"]).pinned
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["pinned"]


def test_install_refuses_a_tampered_file_and_leaves_nothing(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "src")
    entry = _entry_pinning(folder)
    (folder / "fold_all" / "checkpoint_final.pth").write_bytes(b"weights ALL")
    with pytest.raises(ModelError, match="sha256"):
        models.install_registry_model(entry, str(folder), tmp_path / "models")
    assert list((tmp_path / "models").iterdir()) == []


def test_install_refuses_an_unpinned_expected_checksum(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "src")
    with pytest.raises(ModelError, match="not the pinned"):
        models.install_registry_model(
            _entry_pinning(folder), str(folder), tmp_path / "models", expect_checkpoint="0" * 64
        )


def test_open_model_ships_with_the_package_and_matches_its_pins(tmp_path: Path) -> None:
    spec = resolve_model("open", tmp_path / "cache", roots=models.default_roots({}))
    assert spec.pinned and spec.postprocess and spec.folds == ("all",)
    assert spec.orientation == "RAS"  # trained in RAS (0.4); its training record is pinned
    assert spec.folder.is_relative_to(models.PACKAGE_MODELS_DIR)
    size = sum(p.stat().st_size for p in spec.folder.rglob("*") if p.is_file())
    assert size <= 20 * 2**20
