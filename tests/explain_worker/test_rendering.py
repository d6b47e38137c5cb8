"""Tests for explain_worker.rendering: raw storage round trip, overlays and thumbnails."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from explain_worker import rooms
from explain_worker.rendering import (
    LEGEND_FONT_SIZE,
    LEGEND_HEIGHT,
    MIN_OVERLAY_WIDTH,
    RENDERING_VERSION,
    colour_lut,
    decode_raw,
    encode_raw,
    is_current_rendering,
    render_overlay,
    render_thumbnail,
    rendering_suffix,
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
    # The map's peak is coloured; a corner without evidence shows the (muted) photo as a map
    # without any evidence does.
    blank = np.asarray(
        Image.open(io.BytesIO(render_overlay(photo, np.zeros_like(values), signed=signed)))
    )
    assert tuple(picture[0, -1]) == tuple(blank[0, -1])
    factor = width // 64
    peak = np.unravel_index(np.abs(values).argmax(), values.shape)
    assert tuple(picture[peak[0] * factor, peak[1] * factor]) != tuple(blank[0, -1])
    # The legend is not the photo: colour bar, white background and dark text.
    legend_colours = {tuple(colour) for colour in legend.reshape(-1, 3)}
    assert PHOTO_COLOUR not in legend_colours
    assert (255, 255, 255) in legend_colours
    assert len(legend_colours) > 20
    assert (legend[20:].max(axis=2) < 100).any()


def _text_rows(legend: np.ndarray, top: int) -> list[tuple[int, int]]:
    """(first, last) row of each band of rows holding dark (text) pixels, below ``top``."""
    dark = (legend[top:].max(axis=2) < 100).any(axis=1)
    bands, start = [], None
    for y, is_dark in enumerate([*dark, False]):
        if is_dark and start is None:
            start = y
        elif not is_dark and start is not None:
            bands.append((top + start, top + y - 1))
            start = None
    return bands


@pytest.mark.parametrize("signed", [False, True])
def test_legend_text_is_readable(photo: Image.Image, signed: bool) -> None:
    # The review and instance pages draw the legend at the PNG's own size, so its pixels
    # are what people read: glyphs of at least 12 px from ascender to descender ("high
    # attribution", "against class"), in two rows (scale; what the outline means).
    overlay = np.asarray(
        Image.open(io.BytesIO(render_overlay(photo, attribution_map(), signed=signed)))
    )
    width = overlay.shape[1]
    legend = overlay[width:]
    assert LEGEND_FONT_SIZE >= 12
    bands = _text_rows(legend, top=18)  # below the colour bar
    assert len(bands) == 2, bands
    first_row = bands[0][1] - bands[0][0] + 1
    assert first_row >= 12, bands
    # Both labels of the first row fit apart, without overlapping.
    text = (legend[bands[0][0] : bands[0][1] + 1].max(axis=2) < 100).any(axis=0)
    columns = np.flatnonzero(text)
    gaps = np.diff(columns)
    assert gaps.max() > 10  # a clear gap between the low and the high label


def _speckled_map(seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A gradient-like map: speckle everywhere, a stronger (speckled) region covering 10 %
    of the image, and a few extreme pixels elsewhere, as saliency maps have."""
    rng = np.random.default_rng(seed)
    values = rng.exponential(0.05, (size, size))
    region = np.zeros((size, size), dtype=bool)
    region[20:40, 30:50] = True
    values[region] = rng.exponential(0.5, int(region.sum()))
    spikes = rng.integers(0, size, (3, 2))
    values[spikes[:, 0], spikes[:, 1]] = 20.0
    return values.astype(np.float32), region


def _region_contrast(png: bytes, region: np.ndarray) -> float:
    """Distance (RGB, 0-441) between the median colours inside and outside ``region``."""
    picture = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), np.float32)
    width = picture.shape[1]
    factor = width // region.shape[1]
    mask = np.kron(region, np.ones((factor, factor), dtype=bool))
    picture = picture[: mask.shape[0]]
    inside = np.median(picture[mask], axis=0)
    outside = np.median(picture[~mask], axis=0)
    return float(np.linalg.norm(inside - outside))


@pytest.fixture(scope="module")
def room() -> Image.Image:
    """A demo scene (64 px, pale wall, furniture)."""
    return next(iter(rooms.generate_rooms(n_train=0, n_test=1, n_deployment=0))).image


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_top_region_stands_out_on_a_demo_image(room: Image.Image, seed: int) -> None:
    # On the photo the region and the rest look alike (about 10 of 441); the overlay must
    # make the region obvious at a glance. Scaled by its peak, as before, a speckled map
    # with a few extreme pixels rendered the region at a contrast of 9.
    values, region = _speckled_map(seed)
    photo = np.asarray(room, np.float32)
    photo_contrast = np.linalg.norm(
        np.median(photo[region], axis=0) - np.median(photo[~region], axis=0)
    )
    assert photo_contrast < 30
    assert _region_contrast(render_overlay(room, values, signed=False), region) > 80
    assert _region_contrast(render_overlay(room, values, signed=True), region) > 80
    # The thumbnail (96 px) too.
    thumbnail = render_thumbnail(room, values, signed=False, size=64)
    assert _region_contrast(thumbnail, region) > 80


def test_a_smooth_map_s_top_region_is_outlined(room: Image.Image) -> None:
    # A Grad-CAM-like blob: its top 20 % is outlined in black and white, so the region is a
    # shape even where its colour is close to the photo's.
    rows, cols = np.mgrid[0:64, 0:64].astype(np.float32)
    values = np.exp(-((rows - 32) ** 2 + (cols - 32) ** 2) / 200.0)
    picture = np.asarray(Image.open(io.BytesIO(render_overlay(room, values, signed=False))))
    factor = picture.shape[1] // 64
    row = picture[32 * factor, :, :].astype(int)
    black = np.flatnonzero((row == 0).all(axis=1))
    white = np.flatnonzero((row == 255).all(axis=1))
    # Both edges of the outline on this row.
    assert len(black) >= 2
    assert len(white) >= 2
    # No outline far from the blob.
    assert not (picture[: factor * 4, : factor * 4] == 0).all(axis=2).any()


def test_renderings_are_named_by_version() -> None:
    assert rendering_suffix("overlay") == f"r{RENDERING_VERSION}.overlay.png"
    assert rendering_suffix("thumbnail").startswith(f"r{RENDERING_VERSION}.thumb.")
    assert is_current_rendering(f"explanations/1/2/saliency/cat/3.{rendering_suffix('overlay')}")
    # Names from before the version (and from older versions) are drawn again.
    assert not is_current_rendering("explanations/1/2/saliency/cat/3.overlay.png")
    assert not is_current_rendering("explanations/1/2/saliency/cat/3.r1.overlay.png")


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


def test_small_maps_are_upscaled_to_fit_the_legend(photo: Image.Image) -> None:
    overlay = Image.open(io.BytesIO(render_overlay(photo, attribution_map(64), signed=False)))
    assert overlay.size == (192, 192 + LEGEND_HEIGHT)


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
    # The top of the unsigned scale is the brightest colour; weak evidence stays transparent.
    luminance = unsigned[:, :3] @ np.asarray([0.299, 0.587, 0.114])
    assert luminance[-1] == luminance.max()
    assert unsigned[int(0.1 * 255), 3] == 0.0


def test_bad_maps_are_rejected(photo: Image.Image) -> None:
    with pytest.raises(ValueError, match="2-D"):
        render_overlay(photo, np.zeros((2, 3, 3)), signed=False)
    with pytest.raises(ValueError, match="opacity"):
        render_overlay(photo, attribution_map(), signed=False, opacity=2.0)
