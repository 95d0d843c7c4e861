"""Tests of ctadeface.verify.figure: the QC figure, its thumbnail and the PNG encoder."""

from __future__ import annotations

import io

import numpy as np
import pytest

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


def test_thumbnail_is_a_small_jpeg_of_the_figure() -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    big = figure.png_bytes(rng.integers(0, 255, (300, 960, 3), dtype=np.uint8))
    with Image.open(io.BytesIO(figure.thumbnail_jpeg(big))) as im:
        assert im.format == "JPEG" and im.size == (figure.THUMBNAIL_PX, 100)
    small = figure.png_bytes(np.full((20, 40), 128, np.uint8))
    with Image.open(io.BytesIO(figure.thumbnail_jpeg(small))) as im:
        assert im.size == (40, 20) and im.mode == "RGB"  # never enlarged
    with pytest.raises(ValueError, match="not a readable image"):
        figure.thumbnail_jpeg(b"not a picture")
