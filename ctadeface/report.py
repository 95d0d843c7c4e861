"""Group level: gather what the participant runs left into ``group_ct.tsv``, one row per scan.

Participant runs may have been separate processes (SLURM array tasks); the group level reads only
files: the provenance in each defaced sidecar, and the raw dataset's list of CT scans, so a scan
that was never processed (or failed) shows up as ``missing``.
"""

from __future__ import annotations

import csv
import io as _io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .discover import Scan
from .outputs import output_paths, read_provenance

COLUMNS = (
    "participant_id",
    "session_id",
    "source",
    "status",
    "mask_volume_ml",
    "fill_value",
    "face_p_before",
    "face_p_after",
    "facenet_similarity",
    "seconds",
    "device",
    "model",
)
NA = "n/a"
MISSING = "missing"


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or value == "":
        return NA
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def row_for(scan: Scan, provenance: Mapping[str, Any] | None) -> dict[str, str]:
    """One TSV row for ``scan`` from its recorded provenance (None: no outputs)."""
    row = {
        "participant_id": f"sub-{scan.subject}",
        "session_id": f"ses-{scan.session}" if scan.session else NA,
        "source": scan.relpath,
    }
    prov = provenance or {}
    model = prov.get("Model", {}) if isinstance(prov.get("Model"), dict) else {}
    fill = prov.get("Fill", {}) if isinstance(prov.get("Fill"), dict) else {}
    verify = prov.get("Verification", {}) if isinstance(prov.get("Verification"), dict) else {}
    row.update(
        status=str(prov.get("Status", MISSING)) if provenance else MISSING,
        mask_volume_ml=_fmt(prov.get("MaskVolumeMl")),
        fill_value=_fmt(fill.get("ValueHU"), 1),
        face_p_before=_fmt(verify.get("face_p_before")),
        face_p_after=_fmt(verify.get("face_p_after")),
        facenet_similarity=_fmt(verify.get("facenet_similarity")),
        seconds=_fmt(prov.get("DurationSeconds"), 2),
        device=_fmt(model.get("device")),
        model=_fmt(model.get("model")),
    )
    return row


def read_provenance_for(output_dir: Path, scans: Iterable[Scan]) -> list[tuple[Scan, Any]]:
    """Pair each scan with the provenance its participant run recorded (or None)."""
    return [(scan, read_provenance(output_paths(output_dir, scan).defaced_json)) for scan in scans]


def group_table(pairs: Sequence[tuple[Scan, Any]]) -> list[dict[str, str]]:
    """Rows sorted with problems first (anything not ``defaced``), then by source path."""
    rows = [row_for(scan, prov) for scan, prov in pairs]
    return sorted(rows, key=lambda r: (r["status"] == "defaced", r["source"]))


def to_tsv(rows: Sequence[Mapping[str, str]]) -> str:
    """Tab-separated text with a header line; ``n/a`` for missing values (BIDS convention)."""
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, delimiter="\t", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
