"""Group level: what the participant runs left, as ``group_ct.tsv`` and ``group_report.html``.

Participant runs may have been separate processes (SLURM array tasks); the group level reads only
files: the provenance in each defaced sidecar, and the raw dataset's list of CT scans, so a scan
that was never processed (or failed) shows up as ``missing``.
"""

from __future__ import annotations

import base64
import csv
import html
import io as _io
from collections import Counter
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
    row = {
        "participant_id": f"sub-{scan.subject}",
        "session_id": f"ses-{scan.session}" if scan.session else NA,
        "source": scan.relpath,
    }
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


def urgency(row: Mapping[str, str]) -> int:
    """Where a row goes in the table and report (0 first): identifiable, face-like in strict
    mode, missing (not processed or failed), an empty mask, face-like in face mode (the kept
    facial skeleton), defaced."""
    status = Status(row["status"])
    if status == Status.FACE_LIKE:
        return 1 if row["mask_mode"] == "strict" else 4
    return {Status.IDENTIFIABLE: 0, Status.MISSING: 2, Status.MASK_EMPTY: 3}.get(status, 5)


def needs_a_look(row: Mapping[str, str]) -> bool:
    """Rows a data steward should open: all but defaced scans and face-like ones in face mode."""
    return urgency(row) < 4


def group_table(pairs: Sequence[tuple[Scan, Provenance | None]]) -> list[dict[str, str]]:
    """Rows sorted by :func:`urgency`, then path."""
    rows = [row_for(scan, prov) for scan, prov in pairs]
    return sorted(rows, key=lambda r: (urgency(r), r["source"]))


def to_tsv(rows: Sequence[Mapping[str, str]]) -> str:
    """Tab-separated text with a header line; ``n/a`` for missing values (BIDS convention)."""
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, delimiter="\t", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def read_figures(output_dir: Path, scans: Iterable[Scan]) -> dict[str, bytes]:
    """The before/after render figure of each scan that has one, keyed by source relpath."""
    figures = {}
    for scan in scans:
        path = output_paths(output_dir, scan).figure
        if path.is_file():
            figures[scan.relpath] = path.read_bytes()
    return figures


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #ddd;padding:.35em .5em;text-align:left;vertical-align:top}
th{cursor:pointer;background:#f4f4f4;position:sticky;top:0;user-select:none}
th.sorted-asc::after{content:" \\25B2"}th.sorted-desc::after{content:" \\25BC"}
tbody.flag td{background:#fde8e8}tr.pictures td{border-bottom:2px solid #bbb}
td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;display:block}.none{color:#888}
"""

_SCRIPT = """
(function(){
  var table=document.getElementById('scans');
  var heads=table.tHead.rows[0].cells;
  function key(body,i,num){var c=body.rows[0].cells[i];
    var t=c.getAttribute('data-sort')||c.textContent;
    if(!num)return t;var v=parseFloat(t);return isNaN(v)?-Infinity:v;}
  Array.prototype.forEach.call(heads,function(th,i){
    th.addEventListener('click',function(){
      var asc=!th.classList.contains('sorted-asc');var num=th.getAttribute('data-type')==='num';
      var bodies=Array.prototype.slice.call(table.tBodies);
      bodies.sort(function(a,b){var x=key(a,i,num),y=key(b,i,num);
        return (x<y?-1:x>y?1:0)*(asc?1:-1);});
      bodies.forEach(function(b){table.appendChild(b);});
      Array.prototype.forEach.call(heads,function(h){h.classList.remove('sorted-asc','sorted-desc');});
      th.classList.add(asc?'sorted-asc':'sorted-desc');
    });
  });
  window.addEventListener('load',function(){
    var imgs=document.images,ok=0;
    for(var k=0;k<imgs.length;k++){if(imgs[k].complete&&imgs[k].naturalWidth>0)ok++;}
    document.body.setAttribute('data-images-decoded',ok+'/'+imgs.length);
  });
})();
"""

#: Columns shown in the HTML table (all TSV columns but the source path, shown with the picture).
_HTML_COLUMNS = (
    ("participant_id", "participant", "text"),
    ("session_id", "session", "text"),
    ("status", "status", "text"),
    ("mask_mode", "mask", "text"),
    ("identity_rank1_views", "identity rank 1 (views)", "text"),
    ("identity_p", "identity p", "num"),
    ("face_p_before", "MTCNN p before", "num"),
    ("face_p_after", "MTCNN p after", "num"),
    ("dlib_faces_after", "dlib faces after", "num"),
    ("facenet_similarity", "FaceNet similarity", "num"),
    ("mask_volume_ml", "mask (ml)", "num"),
    ("fill_value", "fill (HU)", "num"),
    ("seconds", "seconds", "num"),
    ("device", "device", "text"),
    ("model", "model", "text"),
)


def group_report_html(rows: Sequence[Mapping[str, str]], figures: Mapping[str, bytes]) -> str:
    """One self-contained page (no external resource): every scan's numbers and renders,
    problems first, columns sortable by clicking their header."""
    esc = html.escape
    flagged = sum(needs_a_look(r) for r in rows)
    counts = Counter(r["status"] for r in rows)
    per_status = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    head = "".join(f'<th data-type="{kind}">{esc(title)}</th>' for _, title, kind in _HTML_COLUMNS)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{esc(row[key])}</td>'
            if kind == "num"
            else f"<td>{esc(row[key])}</td>"
            for key, _, kind in _HTML_COLUMNS
        )
        png = figures.get(row["source"])
        picture = (
            f'<img alt="renders of {esc(row["source"])}" '
            f'src="data:image/png;base64,{base64.b64encode(png).decode()}">'
            if png
            else '<span class="none">no renders (verification off or scan not processed)</span>'
        )
        flag = ' class="flag"' if needs_a_look(row) else ""
        body.append(
            f"<tbody{flag}><tr>{cells}<td>{esc(row['source'])}</td></tr>"
            f'<tr class="pictures"><td colspan="{len(_HTML_COLUMNS) + 1}">{picture}</td></tr>'
            "</tbody>"
        )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>ctadeface group report</title>"
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>ctadeface group report</h1><p>{len(rows)} scan(s): {esc(per_status)}; "
        f"{flagged} need a look (listed first). Click a column header to sort.</p>"
        f'<table id="scans"><thead><tr>{head}<th data-type="text">source</th></tr></thead>'
        f"{''.join(body)}</table>"
        f"<script>{_SCRIPT}</script></body></html>\n"
    )
