"""Tests of ctadeface.verify.figure: the QC figure and the PNG encoder."""

from __future__ import annotations

import io

import numpy as np

from ctadeface.training.phantom import Phantom
from ctadeface.verify import figure


def test_figure_png_decodes(checked: tuple, phantom: Phantom) -> None:
    from PIL import Image

    _, before, after = checked
    args = (before, after, phantom.face, phantom.hu(), phantom.affine)
    data = figure.figure_png(*args, tile=100)
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG" and im.mode == "RGB" and im.size == (500, 300)
        px = np.asarray(im).astype(int)
    red = px[..., 0] > px[..., 1] + 60  # the mask is drawn in red on the slices only
    assert red[200:].any() and not red[:200].any()
    with Image.open(io.BytesIO(figure.figure_png(*args, tile=100, caption="x"))) as im:
        assert im.size == (500, 300 + figure.CAPTION_PX)  # a caption strip on top
        strip = np.asarray(im)[: figure.CAPTION_PX]
    assert strip.max() > 200 and not (px[: figure.CAPTION_PX] == strip).all()


def test_png_bytes_round_trip() -> None:
    from PIL import Image

    gray = (np.arange(12 * 7) % 256).astype(np.uint8).reshape(12, 7)
    with Image.open(io.BytesIO(figure.png_bytes(gray))) as im:
        assert np.array_equal(np.asarray(im), gray)
    rgb = np.stack([gray, 255 - gray, gray // 2], axis=2)
    with Image.open(io.BytesIO(figure.png_bytes(rgb))) as im:
        assert np.array_equal(np.asarray(im), rgb)
