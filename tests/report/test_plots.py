"""ctadeface.report.plots: histograms as inline SVG."""

from __future__ import annotations

import math

from ctadeface.report.plots import histogram_svg, log_bins


def test_histogram_is_an_svg_element_with_its_text_and_is_reproducible():
    groups = {"face": [500.0, 620.0, 700.0], "strict": [800.0, float("nan")]}
    svg = histogram_svg(groups, title="mask volume", xlabel="mL", marks=(50.0, 1500.0))
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert "mask volume" in svg and "face (3)" in svg and "strict (1)" in svg  # NaN dropped
    assert svg == histogram_svg(groups, title="mask volume", xlabel="mL", marks=(50.0, 1500.0))
    assert "<?xml" not in svg and "DOCTYPE" not in svg  # fit to inline into HTML


def test_histogram_without_values_says_so():
    svg = histogram_svg({"face": []}, title="identity test", xlabel="log10 p")
    assert "no scan has this value" in svg
    only_zero = histogram_svg({"face": [0.0]}, title="t", xlabel="x", log10=True)
    assert "no scan has this value" in only_zero  # log10 of 0 is left out


def test_log_bins_span_the_decades():
    bins = log_bins(-8.0, 0.0, per_decade=4)
    assert bins[0] == -8.0 and math.isclose(bins[-1], 0.0) and len(bins) == 33
