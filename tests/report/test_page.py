"""ctadeface.report.page: the group report page (its script checked in Chromium)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest

from ctadeface.outputs import output_paths
from ctadeface.report.figures import scan_links
from ctadeface.report.page import LOOK_LIST, PAGE_SIZE, group_report_html
from ctadeface.report.table import group_table
from ctadeface.status import Status
from ctadeface.verify.figure import png_bytes, thumbnail_jpeg
from tests import records

MADE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _status(i: int) -> Status | None:
    """Scan i of a test folder: every 7th identifiable, every other 5th not processed."""
    if i % 7 == 0:
        return Status.IDENTIFIABLE
    if i % 5 == 0:
        return None
    return Status.FACE_LIKE if i % 2 else Status.DEFACED


def _folder(root: Path, n: int) -> tuple[list[dict[str, str]], dict]:
    """An output folder of ``n`` scans (sidecar stand-ins, figures, thumbnails); its rows and
    links."""
    figure = png_bytes(np.random.default_rng(0).integers(0, 255, (60, 180, 3), dtype=np.uint8))
    thumbnail = thumbnail_jpeg(figure)
    pairs = []
    for i in range(n):
        scan = records.scan(f"{i:04d}", "1" if i % 3 == 0 else None)
        status = _status(i)
        if status is not None:
            paths = output_paths(root, scan)
            for path, data in ((paths.figure, figure), (paths.thumbnail, thumbnail)):
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            paths.defaced_json.parent.mkdir(parents=True, exist_ok=True)
            paths.defaced_json.write_text("{}")
        seconds = (i * 7919) % 1000 / 10  # distinct, not in the order of the names
        prov = (
            None
            if status is None
            else records.provenance(status, 0.9 if i % 2 else 0.1, duration_seconds=seconds)
        )
        pairs.append((scan, prov))
    return group_table(pairs), scan_links(root, [s for s, _ in pairs])


def _data(page: str) -> dict:
    text = re.search(r'<script type="application/json" id="scan-data">(.*?)</script>', page, re.S)
    assert text is not None
    return json.loads(text.group(1))


def test_page_links_pictures_and_carries_every_row(tmp_path):
    rows, links = _folder(tmp_path, 30)
    page = group_report_html(rows, links, made=MADE)
    assert "data:image" not in page and not re.search(r"(src|href)=\"(https?:)?//", page)
    data = _data(page)
    assert len(data["rows"]) == 30 and data["columns"][: len(data["shown"])] == data["shown"]
    col = {c: i for i, c in enumerate(data["columns"])}
    first = data["rows"][0]
    assert first[col["status"]] == "identifiable" and first[col["look"]] == 1
    assert (tmp_path / unquote(first[col["thumbnail"]])).is_file()
    missing = [r for r in data["rows"] if r[col["status"]] == "missing"]
    assert missing and all(r[col["figure"]] == "" for r in missing)
    assert "made 2026-01-01T00:00:00+00:00" in page


def test_summary_counts_and_lists_what_needs_a_look(tmp_path):
    rows, links = _folder(tmp_path, 100)
    page = group_report_html(rows, links, made=MADE)
    summary = page[page.index('<section id="summary">') : page.index("</section>")]
    look = sum(_status(i) in (Status.IDENTIFIABLE, None) for i in range(100))
    assert f"{look} scan(s) need a look." in summary
    assert summary.count("<li>") == LOOK_LIST < look
    assert f'<a href="#look">all {look} in the table</a>' in summary
    identifiable = sum(_status(i) == Status.IDENTIFIABLE for i in range(100))
    assert re.search(rf'>identifiable</a></td><td class="num">{identifiable}</td>', summary)
    assert summary.count("<svg") == 4  # mask volume, MTCNN p, identity p, seconds


def test_page_text_is_escaped_and_cannot_close_its_script(tmp_path):
    rows, links = _folder(tmp_path, 3)
    rows[0]["model"] = "</script><script>alert(1)</script>"
    page = group_report_html(rows, links, made=MADE)
    assert "<script>alert(1)" not in page
    assert _data(page)["rows"][0][list(_data(page)["columns"]).index("model")] == rows[0]["model"]


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class _Refs(HTMLParser):
    """Every href and src of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.refs += [v for k, v in attrs if k in ("href", "src") and v]


def _dump(page: Path, hash_: str = "") -> tuple[str, str]:
    """Chromium's DOM of ``page`` after its script ran, and its console lines."""
    profile = tempfile.mkdtemp(prefix="chromium-")
    cmd = [
        _chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
        "--window-size=1400,40000", "--virtual-time-budget=5000", "--dump-dom",
        page.as_uri() + hash_,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=dict(os.environ))
    shutil.rmtree(profile, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, "\n".join(line for line in proc.stderr.splitlines() if ":CONSOLE" in line)


@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed")
def test_report_pages_in_chromium_without_errors_images_decode_links_resolve(tmp_path):
    rows, links = _folder(tmp_path, 120)
    page = tmp_path / "group_report.html"
    (tmp_path / "group_ct.tsv").write_text("")
    page.write_text(group_report_html(rows, links, made=MADE), encoding="utf-8")
    for _ in range(3):  # on a busy machine the dump can come before the decodes settle
        dom, console = _dump(page)
        if "data-images-decoded=" in dom:
            break
    assert console == ""
    shown = dom[dom.index('<table id="scans"') :]
    assert shown.count("<tr") == 1 + PAGE_SIZE and "page 1 of 3" in dom
    pictures = shown.count("<img")
    assert pictures > 0 and f'data-images-decoded="{pictures}/{pictures}"' in dom
    parser = _Refs()
    parser.feed(dom)
    files = [unquote(r) for r in parser.refs if not r.startswith("#")]
    assert files and all((tmp_path / f).is_file() for f in files), files
    look = sum(_status(i) in (Status.IDENTIFIABLE, None) for i in range(120))
    dom, console = _dump(page, "#look")  # the summary's link to the rows that need a look
    assert console == "" and f"rows 1-{min(look, PAGE_SIZE)} of {look} (filtered from 120)" in dom
    dom, console = _dump(page, "#status=defaced&sort=-seconds")
    shown = [r for r in rows if r["status"] == "defaced"]
    slowest = max(shown, key=lambda r: float(r["seconds"]))
    scans = dom[dom.index('<table id="scans"') :]
    first_row = scans[scans.index("<tbody>") :].split("</tr>")[0]
    assert console == "" and f"of {len(shown)} (filtered" in dom
    assert slowest["participant_id"] in first_row and 'class="sorted-desc"' in dom
