"""ctadeface.report.figures: each scan's links, and thumbnails made where the participant level
left none."""

from __future__ import annotations

import logging

import numpy as np

from ctadeface.outputs import output_paths
from ctadeface.report.figures import Links, scan_links
from ctadeface.verify.figure import THUMBNAIL_PX, png_bytes
from tests import records


def _figure(width: int = 600) -> bytes:
    return png_bytes(np.random.default_rng(0).integers(0, 255, (200, width, 3), dtype=np.uint8))


def test_links_are_relative_and_missing_thumbnails_are_made(tmp_path):
    from PIL import Image

    scans = [records.scan("01"), records.scan("02", "a"), records.scan("03")]
    done, fresh = (output_paths(tmp_path, s) for s in scans[:2])
    for paths in (done, fresh):
        paths.figure.parent.mkdir(parents=True, exist_ok=True)
        paths.figure.write_bytes(_figure())
        paths.defaced_json.parent.mkdir(parents=True, exist_ok=True)
        paths.defaced_json.write_text("{}")
    done.thumbnail.write_bytes(b"kept")  # the participant level's thumbnail is left as it is
    links = scan_links(tmp_path, scans, workers=2)
    assert links[scans[0].relpath] == Links(
        "sub-01/figures/sub-01_desc-deface_render.png",
        "sub-01/figures/sub-01_desc-defacethumb_render.jpg",
        "sub-01/anat/sub-01_desc-defaced_ct.json",
    )
    assert done.thumbnail.read_bytes() == b"kept"
    with Image.open(fresh.thumbnail) as im:
        assert im.format == "JPEG" and im.width == THUMBNAIL_PX
    assert links[scans[1].relpath].thumbnail == fresh.thumbnail.relative_to(tmp_path).as_posix()
    assert links[scans[2].relpath] == Links(None, None, None)  # not processed
    assert not list(tmp_path.rglob("*.tmp*"))  # thumbnails are written atomically


def test_a_broken_figure_gets_no_thumbnail_and_one_warning(tmp_path, caplog):
    scan = records.scan("01")
    paths = output_paths(tmp_path, scan)
    paths.figure.parent.mkdir(parents=True)
    paths.figure.write_bytes(b"\x89PNG truncated")
    with caplog.at_level(logging.WARNING):
        links = scan_links(tmp_path, [scan])
    assert links[scan.relpath] == Links(paths.figure.relative_to(tmp_path).as_posix(), None, None)
    assert not paths.thumbnail.exists()
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == 1 and str(paths.figure) in lines[0] and "no thumbnail" in lines[0]
