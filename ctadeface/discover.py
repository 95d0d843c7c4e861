"""Find the CT images of a raw BIDS dataset, with their inherited sidecar metadata.

CT is not in the BIDS schema yet (BEP024 is a draft), so pybids' default configuration and
validator drop ``_ct`` files.  This module indexes them on purpose:

* A CT image is ``sub-<l>/[ses-<l>/]{anat,ct}/sub-<l>[_ses-<l>][_acq-<l>][_ce-<l>][_rec-<l>]
  [_run-<n>][_chunk-<n>]_{ct,CT}.{nii,nii.gz}`` (entities in this order, labels alphanumeric,
  ``sub``/``ses`` equal to the folders).  Everything else (other modalities, ``derivatives/``,
  ``sourcedata/``, ``code/``, any other top-level folder, hidden files) is never an input.
* pybids indexes the dataset with a small custom configuration (:data:`_PYBIDS_CONFIG`) whose
  entity patterns only look at the file name, never at the folders above the dataset, and whose
  ``datatype`` knows the ``ct`` folder; ``--bids-filter-file`` queries are pybids queries.
  Indexing uses an in-memory database and never writes into the dataset (read-only mounts work).
* The indexer is told to skip every path the app can never use (see :func:`_ignore_patterns`),
  including the subjects and sessions not asked for, which keeps large datasets fast.
* pybids accepts entity orders and folders that BIDS does not, so every candidate is checked
  again by :func:`_parse_image`; a CT-looking file that fails is skipped with a logged warning.
* Sidecar metadata follows the BIDS inheritance principle, computed here (pybids' metadata
  indexing reads every JSON file and fails the whole layout on one malformed file): a
  ``*_ct.json`` / ``*_CT.json`` in the image's folder or any folder above it (up to the dataset
  root) applies when its entities are a subset of the image's; less deep and fewer entities
  apply first, deeper / more entities override.  ``ct`` and ``CT`` count as the same suffix
  (an exact-case match sorts as the more specific one).  A sidecar that cannot be read is
  skipped and described in :attr:`Scan.problem`; discovery goes on.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any

from bids import BIDSLayout, BIDSLayoutIndexer
from bids.layout import Query

from ctadeface.errors import InputError, NoInputError, UsageError

logger = logging.getLogger(__name__)

#: Filename entities allowed on a CT image, in BIDS order (short key -> pybids long name).
CT_ENTITIES: Mapping[str, str] = MappingProxyType(
    {
        "sub": "subject",
        "ses": "session",
        "acq": "acquisition",
        "ce": "ceagent",
        "rec": "reconstruction",
        "run": "run",
        "chunk": "chunk",
    }
)
CT_SUFFIXES: tuple[str, ...] = ("ct", "CT")
CT_DATATYPES: tuple[str, ...] = ("anat", "ct")
IMAGE_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii")
_INDEX_ENTITIES = frozenset({"run", "chunk"})  # integer-valued: run-01 == run-1
_OTHER_FILTER_KEYS = frozenset({"suffix", "extension", "datatype"})
_FILTER_KEYS: Mapping[str, str] = MappingProxyType(
    {**CT_ENTITIES, **{long: long for long in CT_ENTITIES.values()}}
    | {key: key for key in _OTHER_FILTER_KEYS}
)
_FILTER_QUERY_NAME = "ct"
_LABEL = re.compile(r"[A-Za-z0-9]+", re.ASCII)
_INDEX = re.compile(r"[0-9]+", re.ASCII)
_LABEL_KINDS = MappingProxyType({"sub": "participant", "ses": "session"})


def _name_entity(name: str, key: str, value: str = r"([a-zA-Z0-9]+)") -> dict[str, str]:
    # Anchored to the file name ([^/\\]*$): the stock pybids patterns search the absolute path
    # and pick up e.g. "sub-x" or "run-1" from folders above the dataset.
    return {"name": name, "pattern": rf"[_/\\]{key}-{value}(?=[_.])[^/\\]*$"}


#: pybids configuration: the CT entities (file-name only), suffix, datatype and extension.
_PYBIDS_CONFIG: Mapping[str, Any] = MappingProxyType(
    {
        "name": "ctadeface",
        "entities": [
            *(
                _name_entity(long, short)
                for short, long in CT_ENTITIES.items()
                if long not in _INDEX_ENTITIES
            ),
            *(
                {**_name_entity(long, long, r"([0-9]+)"), "dtype": "int"}
                for long in sorted(_INDEX_ENTITIES)
            ),
            {"name": "suffix", "pattern": r"(?:^|[_/\\])([a-zA-Z0-9]+)\.[^/\\]+$"},
            {"name": "datatype", "pattern": r"[/\\](anat|ct)[/\\][^/\\]+$"},
            {"name": "extension", "pattern": r"[^./\\](\.[^/\\]+)$"},
        ],
    }
)


@dataclass(frozen=True)
class Scan:
    """One CT image of the raw dataset and its inherited sidecar metadata."""

    path: Path  # absolute path of the image file (symlinks not resolved)
    relpath: str  # POSIX path relative to bids_dir
    subject: str  # label without "sub-"
    session: str | None  # label without "ses-", None when the dataset has no session folder
    entities: tuple[tuple[str, str], ...]  # file-name entities in BIDS order, short keys
    suffix: str  # "ct" or "CT"
    datatype: str  # "anat" or "ct"
    extension: str  # ".nii.gz" or ".nii"
    metadata: Mapping[str, Any] = field(hash=False)  # merged sidecars, read-only
    sidecars: tuple[Path, ...]  # contributing sidecars, least to most specific
    problem: str | None  # one line when a sidecar (or the image link) could not be read

    @property
    def stem_entities(self) -> str:
        """File-name prefix before the suffix, e.g. ``"sub-01_ses-1_acq-cta_ce-iodine"``."""
        return "_".join(f"{key}-{value}" for key, value in self.entities)


@dataclass(frozen=True)
class _Name:
    """A BIDS file name split into entities, suffix and extension."""

    entities: tuple[tuple[str, str], ...]
    suffix: str
    extension: str


@dataclass(frozen=True)
class _Sidecar:
    """A readable sidecar's content, or the reason it could not be read."""

    content: Mapping[str, Any] | None
    problem: str | None


def normalize_label(label: str, prefix: str) -> str:
    """Return ``label`` without its ``"<prefix>-"`` (prefix ``"sub"`` or ``"ses"``).

    Raises UsageError naming the label unless what is left is non-empty ASCII letters/digits
    (this rejects path tricks such as ``../x``, ``a/b`` and globs such as ``*``).
    """
    key = prefix.removesuffix("-")
    bare = label.removeprefix(f"{key}-")
    if not _LABEL.fullmatch(bare):
        kind = _LABEL_KINDS.get(key, key)
        raise UsageError(
            f"invalid {kind} label {label!r}: use letters and digits only "
            f"(with or without the '{key}-' prefix)"
        )
    return bare


def load_filter_file(path: Path) -> dict[str, Any]:
    """Read a ``--bids-filter-file`` and return its ``"ct"`` query (``{}`` when absent).

    The file is a JSON object ``{"ct": {<entity>: <value(s)>}}``; entities may be pybids long
    names (``ceagent``, ``acquisition``, ...) or BIDS short keys (``ce``, ``acq``, ...), and are
    returned as long names.  A value is a string, an integer, ``null`` (entity absent), ``"*"``
    (entity present) or a list of strings/integers.  Raises UsageError (one line naming the
    file) when it is unreadable, not JSON, not of that shape, or names an unknown key.
    """
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
        content = json.loads(text)
    except OSError as err:
        raise UsageError(f"--bids-filter-file {path}: cannot read ({err.strerror})") from err
    except UnicodeDecodeError as err:
        raise UsageError(f"--bids-filter-file {path}: not UTF-8 text") from err
    except json.JSONDecodeError as err:
        raise UsageError(
            f"--bids-filter-file {path}: invalid JSON at line {err.lineno} "
            f"column {err.colno}: {err.msg}"
        ) from err
    if not isinstance(content, dict):
        raise UsageError(f"--bids-filter-file {path}: expected a JSON object like {{'ct': {{}}}}")
    unknown = sorted(set(content) - {_FILTER_QUERY_NAME})
    if unknown:
        raise UsageError(
            f"--bids-filter-file {path}: unknown query {unknown[0]!r} "
            f"(only {_FILTER_QUERY_NAME!r} is used)"
        )
    query = content.get(_FILTER_QUERY_NAME, {})
    try:
        return _normalize_filters(query)
    except UsageError as err:
        raise UsageError(f"--bids-filter-file {path}: {err}") from err


def find_scans(
    bids_dir: Path,
    *,
    participant_labels: Sequence[str] | None = None,
    session_labels: Sequence[str] | None = None,
    filters: Mapping[str, Any] | None = None,
    skip_validation: bool = False,
) -> list[Scan]:
    """Return the CT images of ``bids_dir`` (sorted by relpath), narrowed by the arguments.

    ``participant_labels`` / ``session_labels`` are given with or without ``sub-`` / ``ses-``;
    ``filters`` is a pybids query (see :func:`load_filter_file`).  Raises UsageError for a bad
    directory, label or filter, InputError for a missing or unreadable dataset_description.json
    (unless ``skip_validation``), NoInputError when nothing matches (naming the asked
    participants/sessions without a CT image); logs a warning when only some of them match.
    Nothing is written to ``bids_dir``.
    """
    root = _check_bids_dir(Path(bids_dir), skip_validation)
    subjects = _unique(normalize_label(label, "sub") for label in participant_labels or ())
    sessions = _unique(normalize_label(label, "ses") for label in session_labels or ())
    query = _normalize_filters(filters or {})

    layout = _index(root, subjects, sessions)
    images = layout.get(
        return_type="object",
        **{"suffix": list(CT_SUFFIXES), "extension": list(IMAGE_EXTENSIONS), **_to_pybids(query)},
    )
    sidecar_dirs = _sidecars_by_folder(layout, root)
    cache: dict[str, _Sidecar] = {}
    scans: list[Scan] = []
    for image in images:
        relpath = Path(image.path).relative_to(root).as_posix()
        name = _parse_image(relpath)
        if isinstance(name, str):
            logger.warning("ignoring %s: %s", relpath, name)
            continue
        entities = dict(name.entities)
        if subjects and entities["sub"] not in subjects:
            continue
        if sessions and entities.get("ses") not in sessions:
            continue
        scans.append(_make_scan(root, relpath, name, sidecar_dirs, cache))
    scans.sort(key=lambda scan: scan.relpath)
    _check_found(root, scans, subjects, sessions, bool(query))
    logger.info(
        "found %d CT image(s) of %d participant(s) in %s",
        len(scans),
        len({scan.subject for scan in scans}),
        root,
    )
    return scans


def _unique(labels: Iterable[str]) -> tuple[str, ...]:
    """Drop repeated labels, keeping the first occurrence's order."""
    return tuple(dict.fromkeys(labels))


def _check_bids_dir(bids_dir: Path, skip_validation: bool) -> Path:
    """Return ``bids_dir`` made absolute (not resolved) after the basic dataset checks.

    With ``skip_validation`` a missing or non-JSON dataset_description.json is accepted, but
    one that exists and cannot be opened or is JSON other than an object is still an error:
    pybids reads it and fails on those.
    """
    root = Path(os.path.abspath(bids_dir))
    if not root.exists():
        raise UsageError(f"bids_dir {root}: no such directory")
    if not root.is_dir():
        raise UsageError(f"bids_dir {root}: not a directory")
    description = root / "dataset_description.json"
    problem: str | None
    try:
        content = json.loads(description.read_bytes().decode("utf-8-sig"))
    except FileNotFoundError:
        problem, tolerated = "missing", True
    except OSError as err:
        problem, tolerated = f"cannot read ({err.strerror})", False
    except (UnicodeDecodeError, json.JSONDecodeError):
        problem, tolerated = "not valid JSON", True
    else:
        is_object = isinstance(content, dict)
        problem, tolerated = (None, True) if is_object else ("not a JSON object", False)
    if problem is None:
        if content.get("DatasetType") == "derivative":
            logger.warning("%s: DatasetType is 'derivative'; expected a raw dataset", description)
    elif not skip_validation:
        raise InputError(
            f"{description}: {problem}; is this a BIDS dataset? "
            "(--skip-bids-validation skips this check)"
        )
    elif not tolerated:
        raise InputError(f"{description}: {problem} (pybids reads it even when not validating)")
    return root


def _normalize_filters(query: Any) -> dict[str, Any]:
    """Validate a CT query; return it with pybids long entity names and JSON values."""
    if not isinstance(query, Mapping):
        raise UsageError(f"the {_FILTER_QUERY_NAME!r} query must be a JSON object")
    normalized: dict[str, Any] = {}
    for key, value in query.items():
        long = _FILTER_KEYS.get(key)
        if long is None:
            known = ", ".join(sorted(set(_FILTER_KEYS.values())))
            raise UsageError(f"unknown filter entity {key!r} (known: {known})")
        if long in normalized:
            raise UsageError(f"filter entity {long!r} given twice")
        values = value if isinstance(value, list) else [value]
        if not values or not all(_is_filter_value(item) for item in values):
            raise UsageError(
                f'filter {key!r}: expected a string, an integer, null, "*" or a list of '
                f"strings/integers, got {value!r}"
            )
        if long == "extension":
            value = [f".{item.lstrip('.')}" if isinstance(item, str) else item for item in values]
        normalized[long] = value
    return normalized


def _is_filter_value(value: Any) -> bool:
    return value is None or (isinstance(value, str | int) and not isinstance(value, bool))


def _to_pybids(query: Mapping[str, Any]) -> dict[str, Any]:
    """JSON query -> pybids ``get`` keywords (``null`` -> Query.NONE, ``"*"`` -> Query.ANY)."""
    special = {None: Query.NONE, "*": Query.ANY}

    def convert(item: Any) -> Any:
        return special.get(item, item) if item is None or isinstance(item, str) else item

    return {
        key: [convert(item) for item in value] if isinstance(value, list) else convert(value)
        for key, value in query.items()
    }


def _ignore_patterns(subjects: Sequence[str], sessions: Sequence[str]) -> list[re.Pattern[str]]:
    """Paths (``/``-rooted, relative to the dataset) the pybids indexer must not visit.

    Kept: root ``*.json`` and ``sub-*/``; in subject/session folders ``ses-*/``, ``anat/``,
    ``ct/`` and ``sub-*.json``; in ``anat/``/``ct/`` only ``sub-*_{ct,CT}.{nii,nii.gz,json}``.
    Subjects and sessions not asked for are skipped whole.
    """
    patterns = [
        r"^/(?!sub-[^/]*$)(?![^/]*\.json$)[^/]*$",
        r"^/sub-[^/]*/(?!ses-[^/]*$|anat$|ct$|sub-[^/]*\.json$)[^/]*$",
        r"^/sub-[^/]*/ses-[^/]*/(?!anat$|ct$|sub-[^/]*\.json$)[^/]*$",
        r"^/sub-[^/]*/(?:ses-[^/]*/)?(?:anat|ct)/(?!sub-[^/]*_(?:ct|CT)\.(?:nii|nii\.gz|json)$)",
    ]
    if subjects:
        alternatives = "|".join(re.escape(label) for label in subjects)
        patterns.append(rf"^/sub-(?!(?:{alternatives})$)[^/]*$")
    if sessions:
        alternatives = "|".join(re.escape(label) for label in sessions)
        patterns.append(rf"^/sub-[^/]*/ses-(?!(?:{alternatives})$)[^/]*$")
    return [re.compile(pattern) for pattern in patterns]


def _index(root: Path, subjects: Sequence[str], sessions: Sequence[str]) -> BIDSLayout:
    """Index ``root`` with pybids in memory (no database file, no validation, no metadata)."""
    indexer = BIDSLayoutIndexer(
        validate=False, ignore=_ignore_patterns(subjects, sessions), index_metadata=False
    )
    try:
        return BIDSLayout(
            root,
            validate=False,
            config=[dict(_PYBIDS_CONFIG)],
            indexer=indexer,
            database_path=None,
        )
    except Exception as err:  # pybids raises assorted types (OSError, ValueError, ...)
        raise InputError(f"{root}: cannot index the dataset ({type(err).__name__}: {err})") from err


def _split_name(name: str, extensions: Sequence[str]) -> _Name | str:
    """Split a BIDS file name; return the reason (a string) when it is not well formed."""
    extension = next((ext for ext in extensions if name.endswith(ext)), None)
    if extension is None:
        return f"extension is not one of {', '.join(extensions)}"
    *pairs, suffix = name.removesuffix(extension).split("_")
    entities = []
    for pair in pairs:
        key, sep, value = pair.partition("-")
        if not sep or not _LABEL.fullmatch(key) or not _LABEL.fullmatch(value):
            return f"{pair!r} is not a key-value entity"
        entities.append((key, value))
    return _Name(tuple(entities), suffix, extension)


def _parse_image(relpath: str) -> _Name | str:
    """Check a candidate CT image path; return its parsed name, or why it is not a CT image."""
    *folders, filename = PurePosixPath(relpath).parts
    name = _split_name(filename, IMAGE_EXTENSIONS)
    if isinstance(name, str):
        return name
    if name.suffix not in CT_SUFFIXES:
        return f"suffix {name.suffix!r} is not ct or CT"
    if len(folders) not in (2, 3) or folders[-1] not in CT_DATATYPES:
        return "not in sub-<label>/[ses-<label>/]{anat,ct}/"
    keys = [key for key, _ in name.entities]
    unknown = [key for key in keys if key not in CT_ENTITIES]
    if unknown:
        return f"entity {unknown[0]!r} is not allowed on a CT image"
    order = list(CT_ENTITIES)
    if keys != sorted(set(keys), key=order.index):
        return "entities repeated or not in BIDS order (sub, ses, acq, ce, rec, run, chunk)"
    entities = dict(name.entities)
    for key in _INDEX_ENTITIES & entities.keys():
        if not _INDEX.fullmatch(entities[key]):
            return f"{key} must be a number"
    expected = {"sub": folders[0]} | ({"ses": folders[1]} if len(folders) == 3 else {})
    for key, folder in expected.items():
        if not folder.startswith(f"{key}-"):
            return f"folder {folder!r} is not {key}-<label>"
        if entities.get(key) != folder.removeprefix(f"{key}-"):
            return f"{key} entity does not match the folder {folder!r}"
    if "ses" in entities and len(folders) == 2:
        return "ses entity without a ses-<label> folder"
    return name


def _sidecars_by_folder(layout: BIDSLayout, root: Path) -> dict[str, list[tuple[str, _Name]]]:
    """Map folder relpath ("" for the root) -> [(sidecar relpath, parsed name)] of CT sidecars."""
    by_folder: dict[str, list[tuple[str, _Name]]] = {}
    for sidecar in layout.get(return_type="object", suffix=list(CT_SUFFIXES), extension=".json"):
        relpath = PurePosixPath(Path(sidecar.path).relative_to(root).as_posix())
        name = _split_name(relpath.name, (".json",))
        if isinstance(name, _Name):
            folder = "" if relpath.parent == PurePosixPath(".") else relpath.parent.as_posix()
            by_folder.setdefault(folder, []).append((relpath.as_posix(), name))
    return by_folder


def _applies(sidecar: _Name, image: _Name) -> bool:
    """True when the sidecar has a CT suffix and its entities are a subset of the image's."""
    if sidecar.suffix not in CT_SUFFIXES:
        return False
    entities = dict(image.entities)
    for key, value in sidecar.entities:
        if key not in entities:
            return False
        if key in _INDEX_ENTITIES and _INDEX.fullmatch(value):
            if int(value) != int(entities[key]):
                return False
        elif value != entities[key]:
            return False
    return True


def _read_sidecar(root: Path, relpath: str) -> _Sidecar:
    """Read a JSON sidecar; on failure return the one-line reason naming the file."""
    try:
        content = json.loads((root / relpath).read_bytes().decode("utf-8-sig"))
    except OSError as err:
        return _Sidecar(None, f"sidecar {relpath}: cannot read ({err.strerror})")
    except UnicodeDecodeError as err:
        return _Sidecar(None, f"sidecar {relpath}: not UTF-8 text (byte {err.start})")
    except json.JSONDecodeError as err:
        return _Sidecar(
            None,
            f"sidecar {relpath}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}",
        )
    except RecursionError:
        return _Sidecar(None, f"sidecar {relpath}: JSON nested too deeply")
    if not isinstance(content, dict):
        return _Sidecar(None, f"sidecar {relpath}: not a JSON object")
    return _Sidecar(content, None)


def _make_scan(
    root: Path,
    relpath: str,
    name: _Name,
    sidecar_dirs: Mapping[str, Sequence[tuple[str, _Name]]],
    cache: dict[str, _Sidecar],
) -> Scan:
    """Build the Scan of one checked image, merging its applicable sidecars."""
    parts = PurePosixPath(relpath).parts
    folders = ["/".join(parts[:depth]) for depth in range(len(parts))]
    applicable = sorted(
        (
            (depth, len(sidecar.entities), sidecar.suffix == name.suffix, sidecar_rel)
            for depth, folder in enumerate(folders)
            for sidecar_rel, sidecar in sidecar_dirs.get(folder, ())
            if _applies(sidecar, name)
        ),
    )
    metadata: dict[str, Any] = {}
    used: list[Path] = []
    problems: list[str] = []
    for *_, sidecar_rel in applicable:
        if sidecar_rel not in cache:
            cache[sidecar_rel] = _read_sidecar(root, sidecar_rel)
        sidecar = cache[sidecar_rel]
        if sidecar.content is None:
            problems.append(str(sidecar.problem))
            continue
        metadata.update(copy.deepcopy(dict(sidecar.content)))
        used.append(root / sidecar_rel)
    path = root / relpath
    if path.is_symlink() and not path.exists():
        problems.append(f"{relpath}: broken symbolic link (image content not present)")
    entities = dict(name.entities)
    return Scan(
        path=path,
        relpath=relpath,
        subject=entities["sub"],
        session=entities.get("ses"),
        entities=name.entities,
        suffix=name.suffix,
        datatype=parts[-2],
        extension=name.extension,
        metadata=MappingProxyType(metadata),
        sidecars=tuple(used),
        problem="; ".join(problems) or None,
    )


def _check_found(
    root: Path,
    scans: Sequence[Scan],
    subjects: Sequence[str],
    sessions: Sequence[str],
    filtered: bool,
) -> None:
    """Raise NoInputError when nothing matched; warn about asked labels that matched nothing."""
    missing = []
    found_subjects = {scan.subject for scan in scans}
    found_sessions = {scan.session for scan in scans}
    lost_subjects = [label for label in subjects if label not in found_subjects]
    lost_sessions = [label for label in sessions if label not in found_sessions]
    if lost_subjects:
        missing.append("participant(s) " + ", ".join(f"sub-{label}" for label in lost_subjects))
    if lost_sessions:
        missing.append("session(s) " + ", ".join(f"ses-{label}" for label in lost_sessions))
    where = " matching the BIDS filter" if filtered else ""
    if not scans:
        asked = f" for {' and '.join(missing)}" if missing else ""
        raise NoInputError(
            f"no CT image{where}{asked} in {root} (looked for "
            "sub-*/[ses-*/]{anat,ct}/*_{ct,CT}.nii[.gz])"
        )
    for text in missing:
        logger.warning("no CT image%s for %s in %s; going on without", where, text, root)
