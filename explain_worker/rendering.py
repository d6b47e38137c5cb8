"""Storage and display forms of attribution maps: raw float16 arrays, colour overlays, thumbnails.

Pillow and NumPy only (no matplotlib): colours come from small 256-entry lookup tables built
here, indexed in one vectorised step per image. This module must stay free of Django.
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont, features

from explain_worker.methods import normalise_for_display

RAW_KEY = "attribution"
# Stored next to the map: float16 cannot hold the tiny gradients of some models (untrained or
# saturated ones give values below 1e-8, which float16 flushes to zero), so the map is stored
# divided by its largest absolute value and multiplied back on decoding.
RAW_SCALE_KEY = "scale"

# Narrower overlays are upscaled so that the legend's labels fit and stay readable.
MIN_OVERLAY_WIDTH = 128
LEGEND_HEIGHT = 30
_LEGEND_MARGIN = 6
_LEGEND_BAR_TOP = 4
_LEGEND_BAR_HEIGHT = 10
_LEGEND_BACKGROUND = (255, 255, 255)
_LEGEND_TEXT = (30, 30, 30)
# The bar shows each colour as it looks over a mid-grey photo, so "transparent" reads as grey.
_LEGEND_BAR_UNDERLAY = (128, 128, 128)
LEGEND_LABELS_UNSIGNED = ("low", "high attribution")
LEGEND_LABELS_SIGNED = ("against class", "for class")
# Fast zlib level: overlays are photo-like, so higher levels save little and cost a lot of time.
_PNG_COMPRESS_LEVEL = 1
_WEBP_QUALITY = 80

_LUT_SIZE = 256


@lru_cache(maxsize=2)
def colour_lut(signed: bool) -> np.ndarray:
    """``float32 (256, 4)`` RGBA in [0, 1]; alpha grows with the strength of the evidence.

    Unsigned maps run from transparent through dark red and red to yellow ('hot'-like); signed
    maps run from blue (negative) through transparent (zero) to red (positive).
    """
    t = np.linspace(0.0, 1.0, _LUT_SIZE)
    if signed:
        # Index 0 is -1 (blue), index 255 is +1 (red); near zero the colour hardly matters, as it
        # is almost transparent there.
        negative = t < 0.5
        r = np.where(negative, 0.1, 0.9)
        g = np.where(negative, 0.3, 0.1)
        b = np.where(negative, 0.95, 0.05)
        alpha = np.abs(t * 2.0 - 1.0)
    else:
        r = np.interp(t, [0.0, 0.35, 0.7, 1.0], [0.45, 0.85, 1.0, 1.0])
        g = np.interp(t, [0.0, 0.35, 0.7, 1.0], [0.0, 0.1, 0.55, 0.95])
        b = np.interp(t, [0.0, 0.35, 0.7, 1.0], [0.0, 0.0, 0.0, 0.2])
        alpha = t
    lut = np.stack([r, g, b, alpha], axis=1).astype(np.float32)
    lut.flags.writeable = False
    return lut


def encode_raw(attribution: np.ndarray) -> bytes:
    """Compress a map as ``.npz`` with a float16 ``attribution`` array and a float64 scale."""
    values = np.nan_to_num(np.asarray(attribution, dtype=np.float64))
    peak = float(np.abs(values).max()) if values.size else 0.0
    scale = peak if peak > 0.0 else 1.0
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        **{RAW_KEY: (values / scale).astype(np.float16), RAW_SCALE_KEY: np.float64(scale)},
    )
    return buffer.getvalue()


def decode_raw(data: bytes) -> np.ndarray:
    """Inverse of :func:`encode_raw`, as float32; plain ``.npz`` files without a scale also work."""
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        values = archive[RAW_KEY].astype(np.float32)
        if RAW_SCALE_KEY in archive.files:
            values *= np.float32(archive[RAW_SCALE_KEY])
    return values


def _check_map(attribution: np.ndarray) -> np.ndarray:
    values = np.asarray(attribution)
    if values.ndim != 2 or min(values.shape) == 0:
        raise ValueError(f"expected a non-empty 2-D attribution map, got shape {values.shape}")
    return values


def _colour_indices(normalised: np.ndarray, signed: bool) -> np.ndarray:
    if signed:
        scaled = (normalised + 1.0) * ((_LUT_SIZE - 1) / 2.0)
    else:
        # A map called unsigned may still hold small negative noise; it shows as no evidence.
        scaled = normalised * (_LUT_SIZE - 1)
    return np.clip(np.rint(scaled), 0, _LUT_SIZE - 1).astype(np.intp)


def _blend(
    image: Image.Image, attribution: np.ndarray, size: tuple[int, int], signed: bool, opacity: float
) -> Image.Image:
    """The image at ``size`` (width, height) with the map coloured and blended over it."""
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be between 0 and 1, got {opacity}")
    base = np.asarray(image.convert("RGB").resize(size, Image.Resampling.BILINEAR), np.float32)
    normalised = normalise_for_display(attribution).astype(np.float32, copy=False)
    if normalised.shape[::-1] != size:
        # Mode "F" keeps the map as float, so the resize does not quantise it.
        normalised = np.asarray(
            Image.fromarray(normalised, mode="F").resize(size, Image.Resampling.BILINEAR)
        )
    rgba = colour_lut(signed)[_colour_indices(normalised, signed)]
    alpha = rgba[..., 3:] * opacity
    blended = base + (rgba[..., :3] * 255.0 - base) * alpha
    return Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8), mode="RGB")


def _display_size(attribution: np.ndarray, min_width: int) -> tuple[int, int]:
    height, width = attribution.shape
    # Whole-number upscaling keeps the map's cells evenly sized.
    factor = -(-min_width // width) if width < min_width else 1
    return width * factor, height * factor


@lru_cache(maxsize=1)
def _legend_font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default()


def _legend(width: int, signed: bool, opacity: float) -> Image.Image:
    strip = Image.new("RGB", (width, LEGEND_HEIGHT), _LEGEND_BACKGROUND)
    bar_width = max(1, width - 2 * _LEGEND_MARGIN)
    ramp = np.linspace(-1.0 if signed else 0.0, 1.0, bar_width, dtype=np.float32)
    rgba = colour_lut(signed)[_colour_indices(ramp, signed)]
    underlay = np.asarray(_LEGEND_BAR_UNDERLAY, dtype=np.float32)
    # The legend uses the overlay's own opacity so the bar's colours match the picture's.
    row = underlay + (rgba[:, :3] * 255.0 - underlay) * (rgba[:, 3:] * opacity)
    bar = np.broadcast_to(
        np.clip(np.rint(row), 0, 255).astype(np.uint8), (_LEGEND_BAR_HEIGHT, *row.shape)
    )
    strip.paste(
        Image.fromarray(np.ascontiguousarray(bar), mode="RGB"), (_LEGEND_MARGIN, _LEGEND_BAR_TOP)
    )
    draw = ImageDraw.Draw(strip)
    font = _legend_font()
    low, high = LEGEND_LABELS_SIGNED if signed else LEGEND_LABELS_UNSIGNED
    text_top = _LEGEND_BAR_TOP + _LEGEND_BAR_HEIGHT + 2
    draw.text((_LEGEND_MARGIN, text_top), low, fill=_LEGEND_TEXT, font=font)
    draw.text((width - _LEGEND_MARGIN, text_top), high, fill=_LEGEND_TEXT, font=font, anchor="ra")
    return strip


def render_overlay(
    image: Image.Image, attribution: np.ndarray, *, signed: bool, opacity: float = 0.5
) -> bytes:
    """PNG of ``image`` at the map's resolution with the map blended over it and a legend below.

    The picture is upscaled by a whole factor to at least ``MIN_OVERLAY_WIDTH`` pixels wide so
    that the legend's labels are readable; the legend strip adds ``LEGEND_HEIGHT`` pixels.
    """
    values = _check_map(attribution)
    size = _display_size(values, MIN_OVERLAY_WIDTH)
    picture = _blend(image, values, size, signed, opacity)
    canvas = Image.new("RGB", (size[0], size[1] + LEGEND_HEIGHT), _LEGEND_BACKGROUND)
    canvas.paste(picture, (0, 0))
    canvas.paste(_legend(size[0], signed, opacity), (0, size[1]))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", compress_level=_PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def thumbnail_format() -> str:
    """``"WEBP"`` where Pillow was built with WebP support, else ``"PNG"``."""
    return "WEBP" if features.check("webp") else "PNG"


def render_thumbnail(
    image: Image.Image,
    attribution: np.ndarray,
    *,
    signed: bool,
    size: int = 96,
    opacity: float = 0.5,
) -> bytes:
    """Overlay without legend, fitted into ``size`` x ``size`` keeping the map's aspect ratio."""
    if size < 1:
        raise ValueError(f"thumbnail size must be positive, got {size}")
    values = _check_map(attribution)
    height, width = values.shape
    scale = size / max(height, width)
    fitted = (max(1, round(width * scale)), max(1, round(height * scale)))
    picture = _blend(image, values, fitted, signed, opacity)
    buffer = io.BytesIO()
    fmt = thumbnail_format()
    if fmt == "WEBP":
        picture.save(buffer, format="WEBP", quality=_WEBP_QUALITY, method=0)
    else:
        picture.save(buffer, format="PNG", compress_level=_PNG_COMPRESS_LEVEL)
    return buffer.getvalue()
