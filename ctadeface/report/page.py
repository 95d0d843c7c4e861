"""``group_report.html``: a summary a data steward reads first, then every scan in a table that
pages, sorts and filters in the browser.

The page is one file with no external resource (no CDN, no server): it opens from the output
folder, links each scan's thumbnail (``<img loading="lazy">``) and full figure by relative path,
and carries the rows as JSON that a small script shows a page at a time, so its size does not
grow with the pictures and the browser only decodes the thumbnails of the page on screen.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

from ctadeface import __version__
from ctadeface.report.figures import Links
from ctadeface.report.plots import histogram_svg, log_bins
from ctadeface.report.table import NA, PLAUSIBLE_MASK_ML, needs_a_look, reason, urgency
from ctadeface.status import Status

#: Rows of the "needs a look" list in the summary; the rest are one filter away in the table.
LOOK_LIST = 20
#: Rows per page of the table, the choices offered and the default.
PAGE_SIZES = (25, 50, 100, 200)
PAGE_SIZE = 50
#: The identity test's alpha and the lowest p the identity plot shows (log10).
IDENTITY_ALPHA = 0.05
IDENTITY_P_FLOOR = -8.0

#: Columns of the table: (row key, header, kind); kind "num" sorts numerically.
TABLE_COLUMNS = (
    ("participant_id", "participant", "text"),
    ("session_id", "session", "text"),
    ("status", "status", "text"),
    ("mask_mode", "mask", "text"),
    ("identity_rank1_views", "identity rank 1 (yaws)", "text"),
    ("identity_p", "identity p", "num"),
    ("face_p_before", "MTCNN p before", "num"),
    ("face_p_after", "MTCNN p after", "num"),
    ("dlib_faces_after", "dlib faces after", "num"),
    ("facenet_similarity", "FaceNet similarity", "num"),
    ("mask_volume_ml", "mask (mL)", "num"),
    ("fill_value", "fill (HU)", "num"),
    ("seconds", "seconds", "num"),
    ("device", "device", "text"),
    ("model", "model", "text"),
    ("source", "source", "text"),
)
#: The renders' column comes after this many of :data:`TABLE_COLUMNS` (after the session).
PICTURE_AT = 2
#: Per-row fields the script needs beside the columns.
_EXTRA = ("figure", "thumbnail", "sidecar", "look", "reason")

#: The page's style sheet and script, inlined into it (package files beside this module).
STYLE = Path(__file__).with_name("report.css")
SCRIPT = Path(__file__).with_name("report.js")


def _href(path: str) -> str:
    """A relative path as an HTML attribute value (percent-encoded, escaped)."""
    return html.escape(quote(path), quote=True)


def _floats(rows: Sequence[Mapping[str, str]], key: str) -> dict[str, list[float]]:
    """Per mask mode, the rows' numeric values of ``key`` (``n/a`` left out)."""
    out: dict[str, list[float]] = {}
    for row in rows:
        if row[key] == NA or row["mask_mode"] == NA:
            continue
        out.setdefault(row["mask_mode"], []).append(float(row[key]))
    return out


def plots(rows: Sequence[Mapping[str, str]]) -> list[str]:
    """The summary's plots: mask volume, MTCNN p after, identity p, seconds per scan."""
    low, high = PLAUSIBLE_MASK_ML
    identity = {
        mode: [max(p, 10**IDENTITY_P_FLOOR) for p in values]
        for mode, values in _floats(rows, "identity_p").items()
    }
    return [
        histogram_svg(
            _floats(rows, "mask_volume_ml"),
            title="mask volume",
            xlabel="mL (dashed: plausible range)",
            marks=(low, high),
        ),
        histogram_svg(
            _floats(rows, "face_p_after"),
            title="MTCNN face probability after",
            xlabel="p (highest of the views)",
            bins=[i / 20 for i in range(21)],
        ),
        histogram_svg(
            identity,
            title="identity test",
            xlabel=f"log10 p (dashed: {IDENTITY_ALPHA})",
            bins=log_bins(IDENTITY_P_FLOOR),
            marks=(math.log10(IDENTITY_ALPHA),),
            log10=True,
        ),
        histogram_svg(_floats(rows, "seconds"), title="time per scan", xlabel="seconds"),
    ]


def _counts_table(rows: Sequence[Mapping[str, str]]) -> str:
    """Scans per status (most urgent first) and mask mode."""
    esc = html.escape
    counts = Counter((r["status"], r["mask_mode"]) for r in rows)
    modes = sorted({m for _, m in counts}, key=lambda m: (m == NA, m))
    statuses = sorted(
        {s for s, _ in counts},
        key=lambda s: min(urgency(r) for r in rows if r["status"] == s),
    )
    head = "".join(f"<th>{esc(m if m != NA else 'no mask')}</th>" for m in modes)
    body = []
    for s in statuses:
        cells = "".join(f'<td class="num">{counts.get((s, m), 0)}</td>' for m in modes)
        total = sum(counts.get((s, m), 0) for m in modes)
        body.append(
            f'<tr><td><a href="#status={_href(s)}">{esc(s)}</a></td>{cells}'
            f'<td class="num">{total}</td></tr>'
        )
    totals = "".join(
        f'<td class="num">{sum(counts.get((s, m), 0) for s in statuses)}</td>' for m in modes
    )
    return (
        f'<table class="counts"><thead><tr><th>status</th>{head}<th>all</th></tr></thead>'
        f"<tbody>{''.join(body)}</tbody><tfoot><tr><td>all</td>{totals}"
        f'<td class="num">{len(rows)}</td></tr></tfoot></table>'
    )


def _look_list(rows: Sequence[Mapping[str, str]], links: Mapping[str, Links]) -> str:
    """The first :data:`LOOK_LIST` rows that need a look, with links."""
    esc = html.escape
    look = [r for r in rows if needs_a_look(r)]
    if not look:
        return "<p>Nothing needs a look: no scan is identifiable, failed or has an odd mask.</p>"
    items = []
    for row in sorted(look, key=lambda r: (urgency(r), r["source"]))[:LOOK_LIST]:
        link = links.get(row["source"], Links(None, None, None))
        name = " ".join(v for v in (row["participant_id"], row["session_id"]) if v != NA)
        title = f'<a href="{_href(link.figure)}">{esc(name)}</a>' if link.figure else esc(name)
        side = f' (<a href="{_href(link.sidecar)}">sidecar</a>)' if link.sidecar else ""
        items.append(f"<li>{title}: {esc(reason(row))}{side}</li>")
    more = (
        f'<p>and {len(look) - LOOK_LIST} more: <a href="#look">all {len(look)} in the table</a>'
        ".</p>"
        if len(look) > LOOK_LIST
        else '<p><a href="#look">Show them in the table</a>.</p>'
    )
    return f'<p>{len(look)} scan(s) need a look.</p><ol class="look">{"".join(items)}</ol>{more}'


def _data_json(rows: Sequence[Mapping[str, str]], links: Mapping[str, Links]) -> str:
    """The rows for the script: column names, kinds, and one array of strings per row."""
    keys = [k for k, _, _ in TABLE_COLUMNS]
    kinds = [kind for _, _, kind in TABLE_COLUMNS] + ["text"] * len(_EXTRA)
    out: list[list[str | int]] = []
    for row in rows:
        link = links.get(row["source"], Links(None, None, None))
        paths = [quote(p) if p else "" for p in (link.figure, link.thumbnail, link.sidecar)]
        out.append([*(row[k] for k in keys), *paths, int(needs_a_look(row)), reason(row)])
    data = {
        "columns": keys + list(_EXTRA),
        "kinds": kinds,
        "shown": keys,
        "picture_at": PICTURE_AT,
        "rows": out,
    }
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    # as Django's json_script: no <, > or & can end or re-open the script element
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _options(values: Sequence[str], everything: str) -> str:
    esc = html.escape
    counts = Counter(values)
    return f'<option value="">{everything}</option>' + "".join(
        f'<option value="{esc(v, quote=True)}">{esc(v)} ({n})</option>'
        for v, n in sorted(counts.items())
    )


def group_report_html(
    rows: Sequence[Mapping[str, str]],
    links: Mapping[str, Links],
    *,
    made: _dt.datetime | None = None,
    title: str = "ctadeface group report",
    table_file: str = "group_ct.tsv",
) -> str:
    """The page for ``rows`` (:func:`ctadeface.report.table.group_table`'s, in that order) and
    each scan's files (:func:`ctadeface.report.figures.scan_links`, by source relpath).

    ``made``: the time the page says it was made (default now, UTC); ``title``: its heading;
    ``table_file``: the TSV beside it that holds every row.
    """
    esc = html.escape
    made = made or _dt.datetime.now(_dt.UTC)
    head = [
        f'<th data-key="{key}" data-type="{kind}">{esc(title)}</th>'
        for key, title, kind in TABLE_COLUMNS
    ]
    head.insert(PICTURE_AT, "<th>renders</th>")
    sizes = "".join(
        f'<option value="{n}"{" selected" if n == PAGE_SIZE else ""}>{n}</option>'
        for n in PAGE_SIZES
    )
    missing = sum(r["status"] == Status.MISSING for r in rows)
    script = SCRIPT.read_text().replace("PAGE_SIZE", str(PAGE_SIZE))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{esc(title)}</title>"
        f"<style>{STYLE.read_text()}</style></head><body>"
        f"<h1>{esc(title)}</h1>"
        f'<p class="meta">{len(rows)} scan(s), {missing} without outputs; ctadeface '
        f"{esc(__version__)}; made {esc(made.isoformat(timespec='seconds'))}. Every row is also in "
        f'<a href="{_href(table_file)}">{esc(table_file)}</a>.</p>'
        '<section id="summary"><h2>Summary</h2>'
        f"{_counts_table(rows)}"
        "<h3>Needs a look</h3>"
        f"{_look_list(rows, links)}"
        f'<div class="plots">{"".join(plots(rows))}</div></section>'
        '<section><h2 id="table">Scans</h2>'
        "<noscript><p>The table needs JavaScript; every row is in "
        f"{esc(table_file)}.</p></noscript>"
        '<div class="controls">'
        f'<label>status <select id="f-status">{_options([r["status"] for r in rows], "all")}'
        "</select></label>"
        f'<label>mask <select id="f-mode">{_options([r["mask_mode"] for r in rows], "all")}'
        "</select></label>"
        '<label>participant, session or file <input id="f-text" type="search" size="18">'
        "</label>"
        '<label><input id="f-look" type="checkbox"> needs a look</label>'
        f'<label>rows a page <select id="p-size">{sizes}</select></label></div>'
        '<div class="controls"><button id="p-first">first</button>'
        '<button id="p-prev">previous</button><span id="p-page"></span>'
        '<button id="p-next">next</button><button id="p-last">last</button>'
        '<span id="p-info"></span></div>'
        f'<table id="scans"><thead><tr>{"".join(head)}</tr></thead><tbody></tbody>'
        "</table></section>"
        f'<script type="application/json" id="scan-data">{_data_json(rows, links)}</script>'
        f"<script>{script}</script></body></html>\n"
    )
