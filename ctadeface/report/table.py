"""The group table: one row of strings per scan (the columns of ``group_ct.tsv``), ordered by
what needs a look first."""

from __future__ import annotations

import csv
import io as _io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ctadeface.discover import Scan
from ctadeface.outputs import output_paths, read_provenance
from ctadeface.provenance import Provenance
from ctadeface.status import Status

COLUMNS = (
    "participant_id",
    "session_id",
    "source",
    "status",
    "mask_mode",
    "mask_volume_ml",
    "fill_value",
    "identity_rank1_views",
    "identity_chance",
    "identity_p",
    "face_p_before",
    "face_p_after",
    "dlib_faces_after",
    "facenet_similarity",
    "seconds",
    "device",
    "model",
)
NA = "n/a"


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or value == "":
        return NA
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def row_for(scan: Scan, provenance: Provenance | None) -> dict[str, str]:
    """One TSV row for ``scan`` from its recorded provenance (None: no outputs)."""
    session = f"ses-{scan.session}" if scan.session else NA
    return provenance_row(provenance, f"sub-{scan.subject}", session, scan.relpath)


def provenance_row(
    provenance: Provenance | None, participant_id: str, session_id: str, source: str
) -> dict[str, str]:
    """One TSV row from a recorded provenance (None: no outputs), for any kind of input."""
    row = {"participant_id": participant_id, "session_id": session_id, "source": source}
    if provenance is None:
        row.update(dict.fromkeys(COLUMNS[4:], NA), status=Status.MISSING)
        return row
    row.update(dict.fromkeys(COLUMNS[4:], NA))
    verification = provenance.verification
    if verification is not None:
        identity = verification.identity
        row.update(
            identity_rank1_views=f"{identity.rank1_views}/{identity.views_tested}",
            identity_chance=_fmt(identity.chance, 4),
            identity_p=f"{identity.p:.3g}",
            face_p_before=_fmt(verification.face_p_before),
            face_p_after=_fmt(verification.face_p_after),
            dlib_faces_after=str(verification.dlib_faces_after),
            facenet_similarity=_fmt(verification.facenet_similarity),
        )
    row.update(
        status=provenance.status,
        mask_mode=provenance.request.mask_mode,
        mask_volume_ml=_fmt(provenance.mask_volume_ml),
        fill_value=_fmt(provenance.fill.value_hu, 1),
        seconds=_fmt(provenance.duration_seconds, 2),
        device=_fmt(provenance.model.device),
        model=_fmt(provenance.model.model),
    )
    return row


def read_provenance_for(
    output_dir: Path, scans: Iterable[Scan]
) -> list[tuple[Scan, Provenance | None]]:
    """Pair each scan with the provenance its participant run recorded (or None)."""
    return [(scan, read_provenance(output_paths(output_dir, scan).defaced_json)) for scan in scans]


#: Mask volumes outside this range (mL) need a look: above it is the training label gate's
#: limit (``ctadeface.training.train.LabelGate``: neck or shoulders taken as face), below it less
#: than a nose and lips. Face masks of the shared heads are 0.55-0.88 L, strict ones 0.70-1.04 L.
PLAUSIBLE_MASK_ML = (50.0, 1500.0)


def implausible_volume(row: Mapping[str, str]) -> bool:
    """The row's mask volume lies outside :data:`PLAUSIBLE_MASK_ML` (an empty mask is its own
    status, not counted here)."""
    try:
        ml = float(row["mask_volume_ml"])
    except ValueError:
        return False
    low, high = PLAUSIBLE_MASK_ML
    return ml > 0 and not low <= ml <= high


def urgency(row: Mapping[str, str]) -> int:
    """Where a row goes in the table and report (0 first): identifiable, face-like in strict
    mode, missing (not processed or failed), an empty mask, an implausible mask volume,
    face-like in face mode (the kept facial skeleton), defaced."""
    status = Status(row["status"])
    if status == Status.IDENTIFIABLE:
        return 0
    if status == Status.FACE_LIKE and row["mask_mode"] == "strict":
        return 1
    if status in (Status.MISSING, Status.MASK_EMPTY):
        return 2 if status == Status.MISSING else 3
    if implausible_volume(row):
        return 4
    return 5 if status == Status.FACE_LIKE else 6


def needs_a_look(row: Mapping[str, str]) -> bool:
    """Rows a data steward should open: all but defaced scans and face-like ones in face mode
    with a plausible mask."""
    return urgency(row) < 5


def reason(row: Mapping[str, str]) -> str:
    """Why a row needs a look, in a few words ("" when it does not)."""
    match urgency(row):
        case 0:
            return (
                f"identifiable: rank 1 on {row['identity_rank1_views']} yaws, p {row['identity_p']}"
            )
        case 1:
            return (
                f"face-like in strict mode: MTCNN p {row['face_p_after']}, "
                f"dlib faces {row['dlib_faces_after']}"
            )
        case 2:
            return "no outputs: not processed, or failed (see logs/)"
        case 3:
            return "the face mask is empty"
        case 4:
            low, high = PLAUSIBLE_MASK_ML
            return f"mask {row['mask_volume_ml']} mL, outside {low:.0f}-{high:.0f} mL"
    return ""


def group_table(pairs: Sequence[tuple[Scan, Provenance | None]]) -> list[dict[str, str]]:
    """Rows sorted by :func:`urgency`, then path."""
    return sort_rows([row_for(scan, prov) for scan, prov in pairs])


def sort_rows(rows: Iterable[dict[str, str]]) -> list[dict[str, str]]:
    """Rows by :func:`urgency`, then source: what needs a look first."""
    return sorted(rows, key=lambda r: (urgency(r), r["source"]))


def to_tsv(rows: Sequence[Mapping[str, str]]) -> str:
    """Tab-separated text with a header line; ``n/a`` for missing values (BIDS convention)."""
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, delimiter="\t", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
