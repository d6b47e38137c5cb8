"""Tests for explain_worker.rendering: raw storage round trip, overlays and thumbnails."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from explain_worker.rendering import (
    LEGEND_HEIGHT,
    MIN_OVERLAY_WIDTH,
    colour_lut,
    decode_raw,
    encode_raw,
    render_overlay,
    render_thumbnail,
    thumbnail_format,
)

# Legend and overlay are checked against a photo of one colour no LUT entry blends into.
PHOTO_COLOUR = (0, 200, 0)


@pytest.fixture
def photo() -> Image.Image:
    return Image.new("RGB", (200, 150), PHOTO_COLOUR)


def attribution_map(size: int = 64, *, signed: bool = False) -> np.ndarray:
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
    values = np.exp(-((rows - size / 3) ** 2 + (cols - size / 2) ** 2) / size)
    if signed:
        values = values - np.exp(-((rows - 0.8 * size) ** 2 + (cols - 0.2 * size) ** 2) / size)
    return values.astype(np.float32)


def test_raw_round_trip_keeps_float16_precision() -> None:
    values = attribution_map(signed=True) * 3.5
    decoded = decode_raw(encode_raw(values))
    assert decoded.dtype == np.float32
    assert decoded.shape == values.shape
    np.testing.assert_allclose(decoded, values, rtol=1e-3, atol=1e-3 * np.abs(values).max())


def test_raw_round_trip_keeps_tiny_gradients() -> None:
    # Untrained models give gradients far below float16's smallest value.
    values = attribution_map() * 1e-11
    decoded = decode_raw(encode_raw(values))
    assert decoded.max() > 0
    np.testing.assert_allclose(decoded, values, rtol=1e-3, atol=1e-14)


def test_raw_stores_float16_under_the_attribution_key() -> None:
    with np.load(io.BytesIO(encode_raw(attribution_map()))) as archive:
        assert archive["attribution"].dtype == np.float16
    assert not decode_raw(encode_raw(np.zeros((4, 4)))).any()


@pytest.mark.parametrize("signed", [False, True])
def test_overlay_is_a_png_with_a_legend_strip(photo: Image.Image, signed: bool) -> None:
    values = attribution_map(signed=signed)
    overlay = Image.open(io.BytesIO(render_overlay(photo, values, signed=signed)))
    assert overlay.format == "PNG"
    width, height = overlay.size
    assert width >= MIN_OVERLAY_WIDTH
    assert width % 64 == 0  # upscaled by a whole factor
    assert height == width + LEGEND_HEIGHT
    pixels = np.asarray(overlay.convert("RGB"))
    picture, legend = pixels[:width], pixels[width:]
    # The map's peak is coloured, a corner without evidence shows the photo unchanged.
    assert tuple(picture[0, -1]) == PHOTO_COLOUR
    peak = np.unravel_index(np.abs(values).argmax(), values.shape)
    assert tuple(picture[peak[0] * 2, peak[1] * 2]) != PHOTO_COLOUR
    # The legend is not the photo: colour bar, white background and dark text.
    legend_colours = {tuple(colour) for colour in legend.reshape(-1, 3)}
    assert PHOTO_COLOUR not in legend_colours
    assert (255, 255, 255) in legend_colours
    assert len(legend_colours) > 20
    text_rows = legend[LEGEND_HEIGHT - 14 :]
    assert (text_rows.max(axis=2) < 100).any()


def test_signed_overlay_uses_red_for_and_blue_against(photo: Image.Image) -> None:
    values = np.zeros((64, 64), dtype=np.float32)
    values[:32] = 1.0
    values[32:] = -1.0
    overlay = np.asarray(Image.open(io.BytesIO(render_overlay(photo, values, signed=True))))
    red, blue = overlay[10, 10].astype(int), overlay[100, 10].astype(int)
    assert red[0] > red[2]
    assert blue[2] > blue[0]


def test_large_maps_are_not_upscaled(photo: Image.Image) -> None:
    overlay = Image.open(io.BytesIO(render_overlay(photo, attribution_map(224), signed=False)))
    assert overlay.size == (224, 224 + LEGEND_HEIGHT)


@pytest.mark.parametrize("size", [96, 48])
def test_thumbnail_size_and_format(photo: Image.Image, size: int) -> None:
    data = render_thumbnail(photo, attribution_map(), signed=False, size=size)
    thumbnail = Image.open(io.BytesIO(data))
    assert thumbnail.format == thumbnail_format()
    assert thumbnail.size == (size, size)


def test_thumbnail_keeps_the_maps_aspect_ratio(photo: Image.Image) -> None:
    values = np.ones((32, 64), dtype=np.float32)
    thumbnail = Image.open(io.BytesIO(render_thumbnail(photo, values, signed=False, size=96)))
    assert thumbnail.size == (96, 48)


def test_luts_run_from_transparent_to_opaque() -> None:
    unsigned, signed = colour_lut(False), colour_lut(True)
    assert unsigned.shape == signed.shape == (256, 4)
    assert unsigned[0, 3] == 0.0
    assert unsigned[-1, 3] == 1.0
    assert signed[0, 3] == signed[-1, 3] == 1.0
    assert signed[127, 3] < 0.01


def test_bad_maps_are_rejected(photo: Image.Image) -> None:
    with pytest.raises(ValueError, match="2-D"):
        render_overlay(photo, np.zeros((2, 3, 3)), signed=False)
    with pytest.raises(ValueError, match="opacity"):
        render_overlay(photo, attribution_map(), signed=False, opacity=2.0)
