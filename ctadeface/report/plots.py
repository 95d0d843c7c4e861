"""Small plots of a group of scans as inline SVG text (matplotlib's SVG backend, no pyplot and
no global state: every setting is scoped to one figure)."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import numpy as np

#: Size of one plot, inches at 72 points each (about 260 x 150 CSS pixels).
SIZE_IN = (3.6, 2.1)
#: Colours of the mask modes (matplotlib's default cycle), and of marks.
MODE_COLOURS = {"face": "#1f77b4", "strict": "#ff7f0e"}
MARK_COLOUR = "#d62728"


def histogram_svg(
    groups: Mapping[str, Sequence[float]],
    *,
    title: str,
    xlabel: str,
    bins: Sequence[float] | int = 30,
    marks: Sequence[float] = (),
    log10: bool = False,
) -> str:
    """A stacked histogram of ``groups`` (label -> values; NaN dropped) as an ``<svg>`` element.

    ``marks``: x values drawn as dashed lines (limits, thresholds). ``log10``: values are
    plotted as log10(value); ``bins`` and ``marks`` are then in log10 units too, and values at or
    below 0 are left out.
    """
    import matplotlib
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure

    data, labels, colours = [], [], []
    for label, values in groups.items():
        v = np.asarray([float(x) for x in values], dtype=float)
        v = v[np.isfinite(v)]
        if log10:
            v = np.log10(v[v > 0])
        if v.size:
            data.append(v)
            labels.append(f"{label} ({v.size})")
            colours.append(MODE_COLOURS.get(label, "#7f7f7f"))
    # text stays text (small, searchable); ids are stable from page to page
    with matplotlib.rc_context(
        {"svg.fonttype": "none", "svg.hashsalt": "ctadeface", "font.size": 8}
    ):
        fig = Figure(figsize=SIZE_IN, dpi=72, layout="constrained")
        ax = fig.add_subplot()
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("scans")
        if data:
            ax.hist(data, bins=bins, stacked=True, color=colours, label=labels)
            if len(data) > 1 or labels[0].split(" ")[0] in MODE_COLOURS:
                ax.legend(frameon=False)
        else:
            ax.text(0.5, 0.5, "no scan has this value", ha="center", va="center",
                    transform=ax.transAxes)  # fmt: skip
        for x in marks:
            ax.axvline(x, color=MARK_COLOUR, linestyle="--", linewidth=1)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        out = io.StringIO()
        FigureCanvasSVG(fig).print_svg(out, metadata={"Date": None})
    text = out.getvalue()
    return text[text.index("<svg") :]


def log_bins(low: float, high: float = 0.0, per_decade: int = 4) -> list[float]:
    """Bin edges in log10 units from ``low`` to ``high`` (decades), ``per_decade`` a decade."""
    n = max(1, math.ceil((high - low) * per_decade))
    return [low + i / per_decade for i in range(n + 1)]
