"""The files the group report links for each scan: its figure, its thumbnail (made here when the
participant level left none) and its defaced sidecar, as paths relative to the output folder."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ctadeface.discover import Scan
from ctadeface.errors import CTADefaceError
from ctadeface.io import write_bytes_atomic
from ctadeface.outputs import OutputPaths, output_paths
from ctadeface.verify.figure import thumbnail_jpeg

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Links:
    """A scan's files, POSIX paths relative to the output folder (None: not there)."""

    figure: str | None
    thumbnail: str | None
    sidecar: str | None


def _relative(path: Path, output_dir: Path) -> str:
    return path.relative_to(output_dir).as_posix()


def _links(output_dir: Path, paths: OutputPaths) -> Links:
    """The links of one scan, making its thumbnail from its figure when it has none."""
    sidecar = _relative(paths.defaced_json, output_dir) if paths.defaced_json.is_file() else None
    if not paths.figure.is_file():
        return Links(None, None, sidecar)
    figure = _relative(paths.figure, output_dir)
    if not paths.thumbnail.is_file():
        try:
            write_bytes_atomic(paths.thumbnail, thumbnail_jpeg(paths.figure.read_bytes()))
        except (ValueError, OSError, CTADefaceError) as e:
            log.warning("%s: no thumbnail: %s", paths.figure, e)
            return Links(figure, None, sidecar)
    return Links(figure, _relative(paths.thumbnail, output_dir), sidecar)


def scan_links(
    output_dir: Path, scans: Sequence[Scan], *, workers: int | None = None
) -> dict[str, Links]:
    """Each scan's :class:`Links`, keyed by its source relpath; missing thumbnails are made
    (``workers`` threads, default the CPUs: Pillow decodes and scales without the GIL)."""
    output_dir = Path(output_dir)
    jobs = [output_paths(output_dir, scan) for scan in scans]
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        links = list(pool.map(lambda p: _links(output_dir, p), jobs))
    return {scan.relpath: link for scan, link in zip(scans, links, strict=True)}
