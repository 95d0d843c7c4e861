"""Face models: the registry of known models, and resolving ``--model`` to a model folder.

A *model* is an nnU-Net v2 trained-model folder (``Trainer__Plans__configuration``) holding
``plans.json``, ``dataset.json`` and ``fold_*/checkpoint_final.pth``. ``--model`` may name

- a registry model (``cta-deface``, ``open``), found under the search roots as
  ``<root>/<name>/<relpath>`` and checked against its pinned sha256 sums before it is loaded;
- a directory: the trained-model folder itself, or a parent holding exactly one of them
  (``DatasetXXX_Name/`` or an nnU-Net results root with one ``DatasetXXX_Name/``);
- a ``.zip`` made by ``nnUNetv2_export_model_to_zip``: unpacked safely into the cache.

``python -m ctadeface.segment.models`` lists the registry (name, present/missing, path,
checkpoint sha256, licence; tab-separated). ``python -m ctadeface.segment.models install NAME
--from URL|FILE`` installs a registry model at build time (the Docker build uses it for the
published weights); the app itself never downloads anything.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from types import MappingProxyType

from ctadeface.errors import ModelError
from ctadeface.io import sha256_file
from ctadeface.segment import archive
from ctadeface.segment.orientation import check_codes

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint_final.pth"
#: ctadeface's own record of how a model folder was trained (``ctadeface.train`` writes it).
TRAINING_RECORD = "ctadeface_training.json"
MODELS_DIR_ENV = "CTADEFACE_MODELS_DIR"
PACKAGE_MODELS_DIR = Path(__file__).resolve().parents[1] / "data" / "models"
OPT_MODELS_DIR = Path("/opt/ctadeface/models")

_FOLDER_NAME = re.compile(r"^(?P<trainer>[^_].*?)__(?P<plans>.+?)__(?P<configuration>.+)$")


@dataclass(frozen=True)
class ModelSpec:
    """A resolved, checked nnU-Net v2 trained-model folder, ready for ``FaceSegmenter``.

    ``checkpoint_sha256`` maps each checkpoint used (path relative to ``folder``, e.g.
    ``fold_all/checkpoint_final.pth``) to its sha256, for provenance. ``pinned`` is True when the
    files matched the sha256 sums pinned in the registry (else they are whatever the user gave).
    ``postprocess``: the model's default for ``deface.postprocess`` (see RegistryEntry).
    ``orientation``: the axis codes (e.g. ``RAS``) the model wants its input array in, from
    ``input_orientation`` of the folder's ``ctadeface_training.json`` (written by
    ``ctadeface.train``); None: the stored order, as nnU-Net's own readers give it.
    """

    name: str
    folder: Path
    configuration: str
    trainer: str
    plans_name: str
    folds: tuple[str, ...]
    checkpoint: str
    licence: str
    checkpoint_sha256: Mapping[str, str]
    pinned: bool = False
    postprocess: bool = False
    orientation: str | None = None


@dataclass(frozen=True)
class RegistryEntry:
    """A model the app knows by name.

    ``files`` pins ``relpath`` (relative to the trained-model folder) -> (size in bytes, sha256);
    it may be empty (a model whose files are not pinned). ``home`` is where the model is
    normally installed (the Docker image or the package); every search root is searched.
    ``postprocess``: whether the app applies the fixed post-processing of mask-definition.md
    (``deface.postprocess``) to this model's masks by default (our own model was designed
    with it; the published CTA-DEFACE model is used as published).
    """

    name: str
    description: str
    licence: str
    sources: tuple[str, ...]
    relpath: str
    files: Mapping[str, tuple[int, str]]
    home: Path
    postprocess: bool = False


_CTA_DEFACE_FOLDER = "Dataset001_DEFACE/nnUNetTrainer__nnUNetPlans__3d_fullres"

REGISTRY: Mapping[str, RegistryEntry] = MappingProxyType(
    {
        "cta-deface": RegistryEntry(
            name="cta-deface",
            description=(
                "published CTA-DEFACE model (Mahmutoglu et al. 2024): nnU-Net v2 3d_fullres, "
                "fold all"
            ),
            licence="no licence file published by the authors (ask them before redistributing)",
            sources=(
                "the Google Drive folder linked from the README of "
                "https://github.com/CCI-Bonn/CTA-DEFACE",
                "Git LFS of https://github.com/rapmed/CTA-deface, folder model/",
                "release asset 001.zip of https://github.com/robert-graf/VibeSegmentator (v1.0.0)",
            ),
            relpath=_CTA_DEFACE_FOLDER,
            files=MappingProxyType(
                {
                    f"fold_all/{CHECKPOINT_NAME}": (
                        250036859,
                        "265afd7a1592cd4c43d093b40aa7fbe231a759ab900bba45a84798dfea90e1e5",
                    ),
                    "plans.json": (
                        11420,
                        "f846656355b983726e566b43223ee491dd2eba632931ba710dcad0a24dc07654",
                    ),
                    "dataset.json": (
                        170,
                        "6723dac4952223273ebaeae812543350a2a77412ead02d9b12157600199265dc",
                    ),
                    "dataset_fingerprint.json": (
                        16544,
                        "db21a49426cd32e5c7ced3e6cb2fa45b863e3a4b966afc48e9f8abafaa923d9f",
                    ),
                }
            ),
            home=OPT_MODELS_DIR,
        ),
        "open": RegistryEntry(
            name="open",
            description=(
                "ctadeface's own face model, trained on synthetic CTA heads and openly "
                "licensed CT; shipped in the package"
            ),
            licence="Apache-2.0",
            sources=("shipped inside the ctadeface package (ctadeface/data/models/open/)",),
            relpath="Dataset902_OpenFace/nnUNetTrainer__nnUNetPlans__3d_fullres",
            files=MappingProxyType(
                {
                    f"fold_all/{CHECKPOINT_NAME}": (
                        5720425,
                        "5b3726ef5381113ff1c1d4958b06be0d8d15dba201f4a49d918a44d195c49023",
                    ),
                    "plans.json": (
                        5489,
                        "9920e445238d6ab10351d9cb9d43d4b6ec4a1979d51d9bc6346484ba0f9522e6",
                    ),
                    "dataset.json": (
                        235,
                        "54df5910580a1cfd379949b01e7efe21685ffcff36e19a7033ab034498ad15f3",
                    ),
                    # pinned too: it declares the input orientation (RAS) the weights expect
                    TRAINING_RECORD: (
                        498,
                        "be86dee1c998fc141e112092895c1ddcf88c2577b1d4f4bcbf947e0d3656cc47",
                    ),
                }
            ),
            home=PACKAGE_MODELS_DIR,
            postprocess=True,
        ),
    }
)


def default_roots(environ: Mapping[str, str] | None = None) -> tuple[Path, ...]:
    """The search roots for registry models, in order: ``$CTADEFACE_MODELS_DIR`` (if set),
    the package data dir ``ctadeface/data/models``, ``/opt/ctadeface/models``."""
    env = os.environ if environ is None else environ
    roots: list[Path] = []
    if env.get(MODELS_DIR_ENV):
        roots.append(Path(env[MODELS_DIR_ENV]).expanduser())
    roots += [PACKAGE_MODELS_DIR, OPT_MODELS_DIR]
    return tuple(roots)


def find_registry_model(entry: RegistryEntry, roots: Sequence[Path]) -> Path | None:
    """The first ``<root>/<name>/<relpath>`` that holds a ``plans.json``, or None."""
    for root in roots:
        folder = root / entry.name / entry.relpath
        if (folder / "plans.json").is_file():
            return folder
    return None


def resolve_model(spec: str, cache_dir: Path, roots: Sequence[Path] | None = None) -> ModelSpec:
    """Resolve ``--model`` (registry name, model folder, or nnU-Net export ``.zip``).

    ``cache_dir`` receives unpacked zips (``cache_dir/zips/<sha256 of zip>/``); ``roots`` are
    the registry search roots (default: ``default_roots()``). Raises ModelError.
    """
    if spec in REGISTRY:
        return resolve_registry_entry(REGISTRY[spec], default_roots() if roots is None else roots)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _resolve_directory(spec, path, licence="unknown (a model folder given by the user)")
    if path.is_file() and path.suffix.lower() == ".zip":
        unpacked = archive.extract_model_zip(path, cache_dir)
        return _resolve_directory(spec, unpacked, licence="unknown (a model zip given by the user)")
    names = ", ".join(REGISTRY)
    raise ModelError(
        f"model '{spec}' is neither a known model name ({names}), nor a model folder, "
        "nor a .zip file made by nnUNetv2_export_model_to_zip"
    )


def resolve_registry_entry(entry: RegistryEntry, roots: Sequence[Path]) -> ModelSpec:
    """Find a registry model under ``roots`` and verify its pinned files. Raises ModelError."""
    folder = find_registry_model(entry, roots)
    if folder is None:
        looked = ", ".join(str(r / entry.name) for r in roots)
        target = entry.home / entry.name / entry.relpath
        raise ModelError(
            f"model '{entry.name}' is not installed (looked in {looked}): get it from "
            f"{'; or '.join(entry.sources)}, and put it at {target} (or set "
            f"{MODELS_DIR_ENV}=DIR and put it at DIR/{entry.name}/{entry.relpath}), "
            "or build the Docker image, which downloads it"
        )
    verified = verify_pinned_files(entry, folder)
    spec = _resolve_directory(entry.name, folder, licence=entry.licence, verified=verified)
    return replace(spec, postprocess=entry.postprocess)


def verify_pinned_files(entry: RegistryEntry, folder: Path) -> dict[str, str]:
    """Check every pinned file present in ``folder`` (size, then sha256) before anything
    loads it; files needed for inference must be present. Returns relpath -> sha256 of the
    files verified. Raises ModelError."""
    verified: dict[str, str] = {}
    for relpath, (size, expected) in entry.files.items():
        path = folder / relpath
        if not path.is_file():
            if relpath.endswith((".pth", "plans.json", "dataset.json")):
                raise ModelError(f"model '{entry.name}' is incomplete: {path} is missing")
            continue
        got_size = path.stat().st_size
        if got_size != size:
            raise ModelError(
                f"model '{entry.name}': {path} has {got_size} bytes, expected {size} "
                "(a corrupt or different file; download it again)"
            )
        got = sha256_file(path)
        if got != expected:
            raise ModelError(
                f"model '{entry.name}': {path} has sha256 {got}, expected {expected} "
                "(a corrupt or different file; download it again)"
            )
        verified[relpath] = got
    return verified


def find_trained_model_folder(path: Path) -> Path:
    """The nnU-Net trained-model folder at or directly below ``path``.

    Accepts the folder itself (it has ``plans.json``), ``DatasetXXX_Name/`` with exactly one
    ``Trainer__Plans__configuration`` subfolder, or a results root with exactly one such folder
    one level deeper. Raises ModelError when there is none or more than one.
    """
    if (path / "plans.json").is_file():
        return path
    found = sorted(
        {p.parent for p in path.glob("*__*__*/plans.json")}
        | {p.parent for p in path.glob("*/*__*__*/plans.json")}
    )
    if len(found) == 1:
        return found[0]
    if not found:
        raise ModelError(
            f"{path} is not an nnU-Net model folder: no plans.json in it nor in a "
            "Trainer__Plans__configuration subfolder"
        )
    listed = ", ".join(str(p.relative_to(path)) for p in found)
    raise ModelError(f"{path} holds several nnU-Net model folders ({listed}): give one of them")


def find_folds(folder: Path, checkpoint: str = CHECKPOINT_NAME) -> tuple[str, ...]:
    """``("all",)`` if ``fold_all/<checkpoint>`` exists, else every numeric fold that has one."""
    if (folder / "fold_all" / checkpoint).is_file():
        return ("all",)
    numeric = [
        p.parent.name.removeprefix("fold_")
        for p in folder.glob(f"fold_*/{checkpoint}")
        if p.parent.name.removeprefix("fold_").isdigit()
    ]
    return tuple(sorted(numeric, key=int))


def _resolve_directory(
    name: str, path: Path, licence: str, verified: Mapping[str, str] | None = None
) -> ModelSpec:
    """A ModelSpec for the model folder at or below ``path``; ``verified`` maps relpaths already
    checked against pinned sha256 sums to those sums (not hashed again)."""
    verified = verified or {}
    folder = find_trained_model_folder(path).resolve()
    missing = [f for f in ("plans.json", "dataset.json") if not (folder / f).is_file()]
    if missing:
        raise ModelError(f"model folder {folder} is incomplete: {' and '.join(missing)} missing")
    folds = find_folds(folder)
    if not folds:
        raise ModelError(
            f"model folder {folder} is incomplete: no fold_all/{CHECKPOINT_NAME} "
            f"nor fold_N/{CHECKPOINT_NAME}"
        )
    trainer, plans_name, configuration = _parse_folder_name(folder)
    relpaths = [f"fold_{fold}/{CHECKPOINT_NAME}" for fold in folds]
    checkpoints = {rel: verified.get(rel) or sha256_file(folder / rel) for rel in relpaths}
    log.info("model %s: %s (folds %s)", name, folder, ",".join(folds))
    return ModelSpec(
        name=name,
        folder=folder,
        configuration=configuration,
        trainer=trainer,
        plans_name=plans_name,
        folds=folds,
        checkpoint=CHECKPOINT_NAME,
        licence=licence,
        checkpoint_sha256=MappingProxyType(checkpoints),
        pinned=all(rel in verified for rel in relpaths),
        orientation=input_orientation(folder),
    )


def input_orientation(folder: Path) -> str | None:
    """The ``input_orientation`` of ``folder/ctadeface_training.json`` (axis codes such as
    ``RAS``), or None when the file or the key is absent (any nnU-Net model not trained here)."""
    record = folder / TRAINING_RECORD
    if not record.is_file():
        return None
    try:
        codes = json.loads(record.read_text()).get("input_orientation")
        return None if codes is None else check_codes(str(codes))
    except (ValueError, AttributeError) as err:
        raise ModelError(f"{record}: unreadable input_orientation ({err})") from None


def _parse_folder_name(folder: Path) -> tuple[str, str, str]:
    """(trainer, plans name, configuration) from ``Trainer__Plans__configuration``; else from
    plans.json (its only configuration), with the trainer unknown."""
    match = _FOLDER_NAME.match(folder.name)
    if match:
        return match["trainer"], match["plans"], match["configuration"]
    try:
        plans = json.loads((folder / "plans.json").read_text())
    except (OSError, ValueError) as err:
        raise ModelError(f"model folder {folder}: cannot read plans.json ({err})") from err
    configurations = list(plans.get("configurations", {}))
    configuration = configurations[0] if len(configurations) == 1 else "unknown"
    return "unknown", str(plans.get("plans_name", "unknown")), configuration


# --- listing ----------------------------------------------------------------------------------


def registry_rows(roots: Sequence[Path]) -> list[tuple[str, str, str, str, str]]:
    """One row per registry model: (name, "present"/"missing", path, checkpoint sha256s,
    licence). A present model's sha256 is computed; a missing one shows the pinned sha256."""
    rows = []
    for entry in REGISTRY.values():
        folder = find_registry_model(entry, roots)
        if folder is None:
            pinned = [sha for rel, (_, sha) in entry.files.items() if rel.endswith(".pth")]
            path = entry.home / entry.name / entry.relpath
            rows.append((entry.name, "missing", str(path), ",".join(pinned) or "-", entry.licence))
            continue
        shas = [
            sha256_file(folder / f"fold_{fold}" / CHECKPOINT_NAME) for fold in find_folds(folder)
        ]
        rows.append((entry.name, "present", str(folder), ",".join(shas) or "-", entry.licence))
    return rows


def install_registry_model(
    entry: RegistryEntry, source: str, dest_root: Path, *, expect_checkpoint: str | None = None
) -> Path:
    """Install ``entry`` from ``source`` (an https URL, a zip, or a folder) under ``dest_root``.

    For container builds only: fetches and unpacks ``source`` safely
    (:func:`ctadeface.segment.archive.fetch`), finds the trained-model folder ``entry.relpath``
    inside, checks every pinned file's size and sha256 (and ``expect_checkpoint`` against the
    pinned checkpoint), then moves the folder into ``dest_root/<name>/<relpath>`` in one
    rename. Returns that folder. Raises ModelError.
    """
    pinned = {rel: sha for rel, (_, sha) in entry.files.items() if rel.endswith(".pth")}
    if expect_checkpoint and expect_checkpoint not in pinned.values():
        raise ModelError(
            f"model '{entry.name}': the expected checkpoint sha256 {expect_checkpoint} is not "
            f"the pinned one ({', '.join(pinned.values()) or 'none pinned'})"
        )
    dest_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".install-", dir=dest_root) as scratch:
        work = Path(scratch)
        unpacked = archive.fetch(source, work)
        candidates = [p.parent for p in unpacked.rglob("plans.json")]
        wanted = PurePosixPath(entry.relpath).parts
        matches = [c for c in candidates if c.parts[-len(wanted) :] == wanted] or candidates
        if len(matches) != 1:
            raise ModelError(
                f"model source {source}: expected one {entry.relpath} folder, found {len(matches)}"
            )
        verify_pinned_files(entry, matches[0])
        target = dest_root / entry.name / entry.relpath
        if target.exists():
            raise ModelError(f"{target} exists already; remove it to reinstall")
        archive.move_into_place(matches[0], target, work / "staged")
    log.info("installed model %s at %s", entry.name, target)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ctadeface.segment.models [install ...]``: list the registry models (one
    tab-separated line each), or install one at build time."""
    parser = argparse.ArgumentParser(
        prog="python -m ctadeface.segment.models",
        description="List the known face models: name, present/missing, path, checkpoint "
        "sha256, licence (tab-separated). 'install NAME --from URL|ZIP|DIR' installs one.",
    )
    parser.add_argument(
        "--models-dir",
        type=Path,
        action="append",
        help="search this root instead of the default roots (repeatable)",
    )
    sub = parser.add_subparsers(dest="command")
    inst = sub.add_parser("install", help="install a registry model (container builds)")
    inst.add_argument("name", choices=sorted(REGISTRY))
    inst.add_argument("--from", dest="source", required=True, help="https URL, zip or folder")
    inst.add_argument("--dest", type=Path, required=True, help="models root to install into")
    inst.add_argument("--expect-checkpoint-sha256", help="must equal the pinned checkpoint sha256")
    args = parser.parse_args(argv)
    if args.command == "install":
        try:
            target = install_registry_model(
                REGISTRY[args.name],
                args.source,
                args.dest,
                expect_checkpoint=args.expect_checkpoint_sha256,
            )
        except ModelError as err:
            sys.stderr.write(f"ctadeface.segment.models: error: {err}\n")
            return 1
        sys.stdout.write(f"{args.name}\tinstalled\t{target}\n")
        return 0
    roots = tuple(args.models_dir) if args.models_dir else default_roots()
    for row in registry_rows(roots):
        sys.stdout.write("\t".join(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
