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

# Bump when the overlay or thumbnail looks different for the same map: the name of every
# rendering carries it (``rendering_suffix``), so renderings cached under an older version are
# drawn again on their next view (``annotations.services.explanations.explanation_rendering``).
RENDERING_VERSION = 2

# Narrower overlays are upscaled by a whole factor so that the legend's labels fit: 64 px maps
# (the demo's) become 192 px, 224 px maps stay as they are.
MIN_OVERLAY_WIDTH = 192
# Text of the legend, in pixels of the PNG. The review page draws the legend at the PNG's own
# size and the instance page as well, so this is the size people read (at least 12 px).
LEGEND_FONT_SIZE = 14
LEGEND_HEIGHT = 58
_LEGEND_MARGIN = 6
_LEGEND_BAR_TOP = 4
_LEGEND_BAR_HEIGHT = 12
_LEGEND_ROW_HEIGHT = 19
_LEGEND_BACKGROUND = (255, 255, 255)
_LEGEND_TEXT = (20, 20, 20)
# The bar shows each colour as it looks over a mid-grey photo, so "transparent" reads as grey.
_LEGEND_BAR_UNDERLAY = (128, 128, 128)
LEGEND_LABELS_UNSIGNED = ("low", "high attribution")
LEGEND_LABELS_SIGNED = ("against class", "for class")
LEGEND_OUTLINE_LABEL = "outlined: top 20 %"
# Fast zlib level: overlays are photo-like, so higher levels save little and cost a lot of time.
_PNG_COMPRESS_LEVEL = 1
_WEBP_QUALITY = 80

_LUT_SIZE = 256

# How the overlay stays legible on busy, pale photos (the demo's rooms: pastel walls, white
# and wooden furniture), found by looking at the demo's maps of every method:
# - the photo under the map is muted (mostly grey, darker), so the map's colours are the
#   only saturated ones in the picture and its bright top stands out against the grey;
# - a map is scaled by a high percentile of its magnitude, not its single largest value:
#   gradient maps (saliency, Integrated Gradients) are speckled, with a few pixels far above
#   the rest, and scaled by the peak nearly all of the map rendered invisible;
# - the map is blurred a little (``_SMOOTHING``), so pixel speckle reads as regions;
# - the top ``OUTLINE_TOP_FRACTION`` of the drawn map (as the alignment scores define S on
#   the raw map, see ``explain_worker.alignment``) is outlined: "where the model looked" is a
#   shape.
DEFAULT_OPACITY = 0.85
_PHOTO_SATURATION = 0.3
_PHOTO_BRIGHTNESS = 0.7
_DISPLAY_PERCENTILE = 99.0
# Blur of the drawn map, as a fraction of its larger side (1.3 px on a 64 px map).
_SMOOTHING = 0.02
OUTLINE_TOP_FRACTION = 0.2
_OUTLINE_FLOOR = 0.25
_OUTLINE_DARK = (0, 0, 0)
_OUTLINE_LIGHT = (255, 255, 255)


def rendering_suffix(kind: str) -> str:
    """The end of a rendering's file name, with the rendering version: ``overlay`` gives
    ``"r2.overlay.png"``; thumbnails get their format's extension."""
    if kind == "overlay":
        return f"r{RENDERING_VERSION}.overlay.png"
    ext = "webp" if thumbnail_format() == "WEBP" else "png"
    return f"r{RENDERING_VERSION}.thumb.{ext}"


def is_current_rendering(name: str) -> bool:
    """Whether a stored rendering's name says it was drawn by this rendering version."""
    return f".r{RENDERING_VERSION}." in name


@lru_cache(maxsize=2)
def colour_lut(signed: bool) -> np.ndarray:
    """``float32 (256, 4)`` RGBA in [0, 1]; alpha grows with the strength of the evidence.

    Unsigned maps run from transparent (no evidence) through red and orange to pale yellow at
    the top, fully opaque from 0.6 of the scale: the strongest evidence is the brightest
    colour, which reads at once on the muted photo. Signed maps run from blue (against the
    class) through transparent (zero) to red (for it), opaque from about 0.45 either side.
    """
    t = np.linspace(0.0, 1.0, _LUT_SIZE)
    if signed:
        # Index 0 is -1 (blue), index 255 is +1 (red); near zero the colour hardly matters, as it
        # is almost transparent there.
        negative = t < 0.5
        r = np.where(negative, 0.15, 0.95)
        g = np.where(negative, 0.45, 0.1)
        b = np.where(negative, 1.0, 0.1)
        magnitude = np.abs(t * 2.0 - 1.0)
        alpha = _smoothstep(0.08, 0.45, magnitude)
    else:
        r = np.interp(t, [0.0, 0.3, 0.65, 1.0], [0.85, 0.95, 1.0, 1.0])
        g = np.interp(t, [0.0, 0.3, 0.65, 1.0], [0.05, 0.2, 0.6, 1.0])
        b = np.interp(t, [0.0, 0.3, 0.65, 1.0], [0.1, 0.05, 0.0, 0.55])
        alpha = _smoothstep(0.15, 0.6, t)
    lut = np.stack([r, g, b, alpha], axis=1).astype(np.float32)
    lut.flags.writeable = False
    return lut


def _smoothstep(low: float, high: float, x: np.ndarray) -> np.ndarray:
    u = np.clip((x - low) / (high - low), 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


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


def _smoothed(values: np.ndarray) -> np.ndarray:
    """A Gaussian blur of ``_SMOOTHING`` of the map's width (separable, edges repeated), so a
    speckled gradient map reads as regions; a smooth map (Grad-CAM) hardly changes."""
    sigma = _SMOOTHING * max(values.shape)
    if sigma < 0.5:
        return values
    radius = int(np.ceil(3 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-(x * x) / (2 * sigma * sigma))
    kernel /= kernel.sum()
    height, width = values.shape
    # One shifted multiply-add per tap over the whole array (vectorised, no per-row loop).
    padded = np.pad(values, ((radius, radius), (0, 0)), mode="edge")
    rows = sum(w * padded[k : k + height] for k, w in enumerate(kernel))
    padded = np.pad(rows, ((0, 0), (radius, radius)), mode="edge")
    out = sum(w * padded[:, k : k + width] for k, w in enumerate(kernel))
    return np.asarray(out, dtype=np.float32)


def display_values(attribution: np.ndarray) -> np.ndarray:
    """The map as drawn: smoothed (``_smoothed``), then scaled to [0, 1] without negative
    values, else [-1, 1], by the ``_DISPLAY_PERCENTILE`` percentile of the non-zero magnitudes
    (clipped above it), so a few extreme pixels do not fade the rest of a speckled gradient
    map. Zero stays zero."""
    values = _smoothed(normalise_for_display(attribution).astype(np.float32, copy=False))
    magnitudes = np.abs(values[values != 0.0])
    if magnitudes.size == 0:
        return values
    reference = float(np.percentile(magnitudes, _DISPLAY_PERCENTILE))
    if reference <= 0.0:
        return values
    return np.clip(values / reference, -1.0, 1.0)


def _muted_photo(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    base = np.asarray(image.convert("RGB").resize(size, Image.Resampling.BILINEAR), np.float32)
    grey = base @ np.asarray([0.299, 0.587, 0.114], dtype=np.float32)
    muted = grey[..., None] + (base - grey[..., None]) * _PHOTO_SATURATION
    return muted * _PHOTO_BRIGHTNESS


def top_region(attribution: np.ndarray, drawn: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask (on the map's grid) of the region the overlay outlines: the top
    ``OUTLINE_TOP_FRACTION`` of cells by value of the map as drawn (smoothed; pass
    ``display_values(attribution)`` as ``drawn`` when already computed), the way the alignment
    scores define S on the raw map."""
    from explain_worker.alignment import saliency_mask

    if drawn is None:
        drawn = display_values(attribution)
    # Only where the map is visibly coloured: a signed map may hold fewer strong positive
    # cells than the fraction, and outlining faint ones would mark noise.
    return saliency_mask(drawn, top_fraction=OUTLINE_TOP_FRACTION) & (drawn >= _OUTLINE_FLOOR)


def _outline(picture: np.ndarray, mask: np.ndarray) -> None:
    """Draw the border of ``mask`` (already at the picture's size) in place: dark on its
    inner edge, light just outside, so it shows on any colour."""
    if not mask.any() or mask.all():
        return
    padded = np.pad(mask, 1, mode="edge")
    inside_all = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:] & mask
    any_inside = padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:]
    picture[mask & ~inside_all] = _OUTLINE_DARK
    picture[~mask & any_inside] = _OUTLINE_LIGHT


def _blend(
    image: Image.Image,
    attribution: np.ndarray,
    size: tuple[int, int],
    signed: bool,
    opacity: float,
    outline: bool = True,
) -> Image.Image:
    """The muted image at ``size`` (width, height) with the map coloured and blended over it,
    and the top region outlined."""
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be between 0 and 1, got {opacity}")
    base = _muted_photo(image, size)
    drawn = display_values(attribution)
    normalised = drawn
    if normalised.shape[::-1] != size:
        # Mode "F" keeps the map as float, so the resize does not quantise it.
        normalised = np.asarray(
            Image.fromarray(normalised, mode="F").resize(size, Image.Resampling.BILINEAR)
        )
    rgba = colour_lut(signed)[_colour_indices(normalised, signed)]
    alpha = rgba[..., 3:] * opacity
    blended = np.clip(np.rint(base + (rgba[..., :3] * 255.0 - base) * alpha), 0, 255)
    picture = blended.astype(np.uint8)
    if outline:
        mask = top_region(attribution, drawn)
        if mask.shape[::-1] != size:
            mask = (
                np.asarray(
                    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").resize(
                        size, Image.Resampling.NEAREST
                    )
                )
                > 127
            )
        _outline(picture, mask)
    return Image.fromarray(picture, mode="RGB")


def _display_size(attribution: np.ndarray, min_width: int) -> tuple[int, int]:
    height, width = attribution.shape
    # Whole-number upscaling keeps the map's cells evenly sized.
    factor = -(-min_width // width) if width < min_width else 1
    return width * factor, height * factor


@lru_cache(maxsize=1)
def _legend_font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow's bundled FreeType font (Aileron) at a readable size; no system font needed.
    return ImageFont.load_default(size=LEGEND_FONT_SIZE)


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
    # Second row: what the outline means, with a sample of it.
    row_top = text_top + _LEGEND_ROW_HEIGHT
    swatch = (_LEGEND_MARGIN + 1, row_top + 3, _LEGEND_MARGIN + 15, row_top + 15)
    draw.rectangle(swatch, outline=_OUTLINE_DARK, width=2)
    draw.text((swatch[2] + 6, row_top), LEGEND_OUTLINE_LABEL, fill=_LEGEND_TEXT, font=font)
    return strip


def render_overlay(
    image: Image.Image,
    attribution: np.ndarray,
    *,
    signed: bool,
    opacity: float = DEFAULT_OPACITY,
) -> bytes:
    """PNG of ``image`` at the map's resolution with the map blended over it and a legend below.

    The picture is upscaled by a whole factor to at least ``MIN_OVERLAY_WIDTH`` pixels wide so
    that the legend's labels fit; the legend strip adds ``LEGEND_HEIGHT`` pixels.
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
    opacity: float = DEFAULT_OPACITY,
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
