"""Synthetic "rooms" scenes with failures planted on purpose, for the demo and for tests.

Every image is a wall-and-floor background with simple furniture glyphs drawn by Pillow.
Because the generator knows which objects it drew, where, and which planted failure acts on
each image, simulated experts can answer from ground truth and every metric the product
computes can be checked against the truth.

Backgrounds are chosen independently of the class, so the only evidence a classifier can use
is the furniture, and the planted failures are the only systematic ways it can go wrong.
This module must stay free of Django.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal, TypedDict

import numpy as np
from PIL import Image, ImageDraw

CLASSES: tuple[str, ...] = ("kitchen", "bathroom", "bedroom", "living_room", "dining_room")
SPLITS: tuple[str, ...] = ("train", "test", "deployment")

PLANTED_FAILURES: dict[str, str] = {
    "spurious_object": (
        "A wall clock is in 90% of dining rooms in train (1.5% of other rooms) but in no "
        "dining room in test or deployment, where it hangs in 12% of the other rooms instead. "
        "Tagged on images where the shortcut 'clock means dining room' gives the wrong "
        "answer: dining rooms without a clock and other rooms with one."
    ),
    "confusable_sofa": (
        "Some living rooms have a bed-like sofa drawn like a bed (flat, blue, with a pillow); "
        "rarer in train (10%) than in test and deployment (25%). Tagged on those living rooms."
    ),
    "kitchen_stool": (
        "Stools stand in 60% of kitchens, 12% of dining rooms and 2% of other rooms, so a "
        "stool reads as kitchen evidence: kitchens without one and other rooms with one "
        "suffer. Tagged on every image that contains a stool."
    ),
    "brightness_shift": (
        "Deployment images are taken darker (brightness x0.55-0.67) than train and test "
        "(x0.88-1.12). Tagged on every deployment image."
    ),
    "label_noise": (
        "The recorded label is wrong (label != true_label): 6% of train, 2% of test, none of "
        "deployment. Tagged on exactly those images."
    ),
}

SPURIOUS_OBJECT = "clock"
SPURIOUS_CLASS = "dining_room"

# What a domain expert would point at for each class: the objects that really identify the
# room. The clock and the stool are deliberately absent; sinks count for both wet rooms.
CLASS_EVIDENCE: dict[str, tuple[str, ...]] = {
    "kitchen": ("oven", "fridge", "sink"),
    "bathroom": ("toilet", "bathtub", "sink", "mirror"),
    "bedroom": ("bed", "wardrobe"),
    "living_room": ("sofa", "tv"),
    "dining_room": ("table", "chair", "plates"),
}

# Main body colour of each glyph before brightness and sensor noise, so that a check can tell
# whether a recorded box really holds the object drawn there.
GLYPH_COLOURS: dict[str, tuple[int, int, int]] = {
    "oven": (120, 120, 128),
    "fridge": (236, 238, 242),
    "sink": (150, 185, 205),
    "stool": (170, 55, 35),
    "toilet": (248, 248, 248),
    "bathtub": (200, 225, 245),
    "mirror": (175, 230, 240),
    "bed": (60, 80, 170),
    "lamp": (250, 215, 70),
    "wardrobe": (110, 70, 35),
    "sofa": (150, 35, 55),
    "tv": (20, 20, 28),
    "plant": (35, 140, 50),
    "table": (150, 100, 55),
    "chair": (95, 55, 25),
    "plates": (250, 250, 245),
    "clock": (205, 30, 30),
    "window": (140, 195, 250),
}
CONCEPTS: tuple[str, ...] = tuple(GLYPH_COLOURS)

Zone = Literal["wall", "floor"]


@dataclass(frozen=True)
class _GlyphSize:
    zone: Zone
    width: tuple[int, int]  # inclusive range at 64 px
    height: tuple[int, int]


_SIZES: dict[str, _GlyphSize] = {
    "oven": _GlyphSize("floor", (13, 16), (13, 16)),
    "fridge": _GlyphSize("floor", (10, 13), (22, 27)),
    "sink": _GlyphSize("floor", (12, 15), (10, 12)),
    "stool": _GlyphSize("floor", (8, 10), (9, 11)),
    "toilet": _GlyphSize("floor", (9, 11), (12, 15)),
    "bathtub": _GlyphSize("floor", (20, 25), (9, 11)),
    "mirror": _GlyphSize("wall", (8, 11), (11, 14)),
    "bed": _GlyphSize("floor", (22, 27), (11, 14)),
    "lamp": _GlyphSize("floor", (7, 9), (14, 18)),
    "wardrobe": _GlyphSize("floor", (13, 16), (22, 27)),
    "sofa": _GlyphSize("floor", (20, 25), (11, 13)),
    "tv": _GlyphSize("wall", (14, 18), (10, 12)),
    "plant": _GlyphSize("floor", (8, 10), (12, 16)),
    "table": _GlyphSize("floor", (18, 23), (9, 11)),
    "chair": _GlyphSize("floor", (7, 9), (12, 14)),
    "plates": _GlyphSize("wall", (14, 18), (6, 8)),
    "clock": _GlyphSize("wall", (9, 11), (9, 11)),
    "window": _GlyphSize("wall", (12, 16), (12, 15)),
}

# Objects that make a room recognisable; one of them is always drawn (only the clock is placed
# before it), so every image carries real evidence for its class. A kitchen whose anchor is a
# sink is close to a bathroom, which is what makes the stool a tempting shortcut.
_ANCHORS: dict[str, tuple[str, ...]] = {
    "kitchen": ("oven", "fridge", "sink"),
    "bathroom": ("toilet", "bathtub"),
    "bedroom": ("bed",),
    "living_room": ("sofa",),
    "dining_room": ("table", "chair"),
}

# Further objects and their chance of being drawn, in drawing order. Tables, chairs, sinks,
# lamps and plants are shared between rooms on purpose so that the anchors stay necessary.
_EXTRAS: dict[str, tuple[tuple[str, float], ...]] = {
    "kitchen": (
        ("oven", 0.3),
        ("fridge", 0.3),
        ("sink", 0.3),
        ("table", 0.35),
        ("chair", 0.35),
        ("plates", 0.2),
        ("window", 0.4),
        ("plant", 0.1),
    ),
    "bathroom": (
        ("toilet", 0.5),
        ("bathtub", 0.5),
        ("sink", 0.7),
        ("mirror", 0.65),
        ("window", 0.35),
        ("plant", 0.1),
    ),
    "bedroom": (
        ("wardrobe", 0.6),
        ("lamp", 0.6),
        ("mirror", 0.2),
        ("chair", 0.25),
        ("tv", 0.1),
        ("window", 0.4),
        ("plant", 0.15),
    ),
    "living_room": (
        ("tv", 0.55),
        ("plant", 0.45),
        ("lamp", 0.4),
        ("table", 0.5),
        ("chair", 0.25),
        ("window", 0.45),
    ),
    "dining_room": (
        ("table", 0.6),
        ("chair", 0.6),
        ("chair", 0.3),
        ("plates", 0.3),
        ("plant", 0.2),
        ("lamp", 0.1),
        ("window", 0.4),
    ),
}

_STOOL_RATE: dict[str, float] = {
    "kitchen": 0.6,
    "bathroom": 0.02,
    "bedroom": 0.02,
    "living_room": 0.02,
    "dining_room": 0.12,
}
# Chance of the wall clock per split, for the spurious class and for all other classes.
_CLOCK_RATE: dict[str, tuple[float, float]] = {
    "train": (0.9, 0.015),
    "test": (0.0, 0.12),
    "deployment": (0.0, 0.12),
}
_BEDLIKE_SOFA_RATE: dict[str, float] = {"train": 0.10, "test": 0.25, "deployment": 0.25}
_LABEL_NOISE_SHARE: dict[str, float] = {"train": 0.06, "test": 0.02, "deployment": 0.0}
_BRIGHTNESS: dict[str, tuple[float, float]] = {
    "train": (0.88, 1.12),
    "test": (0.88, 1.12),
    "deployment": (0.55, 0.67),
}
_SENSOR_NOISE_SIGMA = 4.0
_WALL_COLOURS = (
    (225, 215, 190),
    (200, 210, 220),
    (215, 200, 205),
    (205, 220, 200),
    (190, 190, 185),
)
_FLOOR_COLOURS = ((160, 125, 90), (185, 180, 170), (120, 105, 95), (175, 160, 130), (140, 150, 160))
_PLACEMENT_TRIES = 24
_SPLIT_IDS = {name: number for number, name in enumerate(SPLITS)}


class RoomObject(TypedDict):
    """One drawn object; ``box`` is ``[x0, y0, x1, y1]`` in pixels, both ends inclusive."""

    name: str
    box: list[int]


@dataclass(frozen=True)
class RoomSample:
    """One generated image. ``index`` runs across all splits, so it is unique per dataset."""

    index: int
    split: str
    label: str
    true_label: str
    image: Image.Image
    objects: tuple[RoomObject, ...]
    planted: tuple[str, ...]


Box = tuple[int, int, int, int]
Draw = Callable[[ImageDraw.ImageDraw, Box, bool], None]


def _draw_oven(draw: ImageDraw.ImageDraw, box: Box, flip: bool) -> None:
    x0, y0, x1, y1 = box
    draw.rectangle(box, fill=GLYPH_COLOURS["oven"])
    draw.rectangle((x0 + 2, y0 + 5, x1 - 2, y1 - 2), fill=(25, 25, 25))
    draw.rectangle((x0 + 2, y0 + 1, x0 + 4, y0 + 2), fill=(230, 60, 20))
    draw.rectangle((x1 - 4, y0 + 1, x1 - 2, y0 + 2), fill=(230, 60, 20))


def _draw_fridge(draw: ImageDraw.ImageDraw, box: Box, flip: bool) -> None:
    x0, y0, x1, y1 = box
    draw.rectangle(box, fill=GLYPH_COLOURS["fridge"], outline=(150, 150, 160))
    split_y = y0 + (y1 - y0) // 3
    draw.line((x0, split_y, x1, split_y), fill=(150, 150, 160))
    draw.line((x1 - 2, y0 + 2, x1 - 2, split_y - 2), fill=(90, 90, 90))
    draw.line((x1 - 2, split_y + 2, x1 - 2, split_y + 6), fill=(90, 90, 90))


def _draw_sink(draw: ImageDraw.ImageDraw, box: Box, flip: bool) -> None:
    x0, y0, x1, y1 = box
    top = y0 + 3
    draw.rectangle((x0, top, x1, y1), fill=(210, 210, 205))
    draw.rectangle((x0 + 2, top + 1, x1 - 2, top + 5), fill=GLYPH_COLOURS["sink"])
    mid = (x0 + x1) // 2
    draw.rectangle((mid - 1, y0, mid + 1, top), fill=(110, 110, 120))


def _draw_stool(draw: ImageDraw.ImageDraw, box: Box, flip: bool) -> None:
    x0, y0, x1, y1 = box
    draw.ellipse((x0, y0, x1, y0 + 4), fill=GLYPH_COLOURS["stool"])
    draw.line((x0 + 1, y0 + 3, x0 + 1, y1), fill=(60, 40, 30), width=2)
    draw.line((x1 - 1, y0 + 3, x1 - 1, y1), fill=(60, 40, 30), width=2)
    mid = (x0 + x1) // 2
    draw.line((mid, y0 + 3, mid, y1), fill=(60, 40, 30))


def _draw_toilet(draw: ImageDraw.ImageDraw, box: Box, flip: bool) -> None:
    x0, y0, x1, y1 = box
    colour = GLYPH_COLOURS["toilet"]
    tank_bottom = y0 + (y1 - y0) // 2
    draw.rectangle((x0 + 1, y0, x1 - 1, tank_bottom), fill=colour, outline=(170, 170, 170))
    draw.ellipse((x0, tank_bottom - 2, x1, y1 - 2), fill=colour, outline=(170, 170, 170))
    draw.rectangle((x0 + 3, y1 - 3, x1 - 3, y1), fill=colour)


def _draw_bathtub(draw: ImageDraw.ImageDraw, box: Box, flip: bool) -> None:
    x0, y0, x1, _ = box
    draw.rounded_rectangle(box, radius=4, fill=GLYPH_COLOURS["bathtub"], outline=(120, 140, 160))
    draw.rectangle((x0 + 3, y0 + 2, x1 - 3, y0 + 4), fill=(90, 160, 220))
    draw.rectangle((x0 + 1, y0, x0 + 2, y0 + 1), fill=(110, 110, 120))


def _draw_mirror(draw: ImageDraw.ImageDraw, box: Box, flip: bool) -> None:
    x0, y0, x1, y1 = box
    draw.ellipse(box, fill=(170, 170, 180))
    draw.ellipse((x0 + 1, y0 + 1, x1 - 1, y1 - 1), fill=GLYPH_COLOURS["mirror"])
    draw.line((x0 + 3, y0 + 4, x0 + 5, y0 + 2), fill=(250, 250, 255))


def _draw_bed(draw: ImageDraw.ImageDraw, box: Box, flip: bool) -> None:
    # Also draws the bed-like sofa of "confusable_sofa", so both must stay one glyph.
    x0, y0, x1, y1 = box
    head = (x1 - 2, y0, x1, y1) if flip else (x0, y0, x0 + 2, y1)
    draw.rectangle(head, fill=(120, 80, 45))
    mattress = (x0 + 1, y0 + 4, x1 - 3, y1 - 1) if flip else (x0 + 3, y0 + 4, x1 - 1, y1 - 1)
    draw.rectangle(mattress, fill=GLYPH_COLOURS["bed"])
    pillow_x = x1 - 9 if flip else x0 + 4
    draw.rectangle((pillow_x, y0 + 2, pillow_x + 5, y0 + 5), fill=(245, 245, 245))
    draw.line((mattress[0], y1 - 1, mattress[2], y1 - 1), fill=(40, 55, 120))


def _draw_lamp(draw: ImageDraw.ImageDraw, box: Box, flip: bool) -> None:
    x0, y0, x1, y1 = box
    mid = (x0 + x1) // 2
    shade_bottom = y0 + 6
    draw.polygon(
        ((x0 + 2, y0), (x1 - 2, y0), (x1, shade_bottom), (x0, shade_bottom)),
        fill=GLYPH_COLOURS["lamp"],
    )
    draw.line((mid, shade_bottom, mid, y1), fill=(60, 60, 60))
    draw.line((x0 + 1, y1, x1 - 1, y1), fill=(60, 60, 60), width=2)


def _draw_wardrobe(draw: ImageDraw.ImageDraw, box: Box, flip: bool) -> None:
    x0, y0, x1, y1 = box
    draw.rectangle(box, fill=GLYPH_COLOURS["wardrobe"], outline=(60, 35, 15))
    mid = (x0 + x1) // 2
    draw.line((mid, y0 + 1, mid, y1 - 1), fill=(60, 35, 15))
    knob_y = (y0 + y1) // 2
    draw.point(((mid - 2, knob_y), (mid + 2, knob_y)), fill=(230, 200, 90))


def _draw_sofa(draw: ImageDraw.ImageDraw, box: Box, flip: bool) -> None:
    x0, y0, x1, y1 = box
    colour = GLYPH_COLOURS["sofa"]
    dark = (105, 20, 35)
    draw.rectangle((x0 + 2, y0, x1 - 2, y0 + 6), fill=colour, outline=dark)
    draw.rectangle((x0 + 2, y0 + 6, x1 - 2, y1 - 2), fill=colour, outline=dark)
    draw.rectangle((x0, y0 + 4, x0 + 3, y1 - 2), fill=dark)
    draw.rectangle((x1 - 3, y0 + 4, x1, y1 - 2), fill=dark)
    draw.line((x0 + 2, y1 - 1, x0 + 2, y1), fill=(40, 30, 20))
    draw.line((x1 - 2, y1 - 1, x1 - 2, y1), fill=(40, 30, 20))


def _draw_tv(draw: ImageDraw.ImageDraw, box: Box, flip: bool) -> None:
    x0, y0, x1, y1 = box
    draw.rectangle((x0, y0, x1, y1 - 2), fill=(80, 80, 85))
    draw.rectangle((x0 + 1, y0 + 1, x1 - 1, y1 - 3), fill=GLYPH_COLOURS["tv"])
    draw.line((x0 + 2, y0 + 2, x0 + 5, y0 + 2), fill=(60, 90, 140))
    mid = (x0 + x1) // 2
    draw.rectangle((mid - 2, y1 - 1, mid + 2, y1), fill=(80, 80, 85))


def _draw_plant(draw: ImageDraw.ImageDraw, box: Box, flip: bool) -> None:
    x0, y0, x1, y1 = box
    pot_top = y1 - 4
    draw.ellipse((x0, y0, x1, pot_top + 1), fill=GLYPH_COLOURS["plant"])
    draw.ellipse((x0 + 2, y0 + 2, x1 - 3, pot_top - 3), fill=(60, 170, 70))
    draw.rectangle((x0 + 2, pot_top, x1 - 2, y1), fill=(180, 90, 50))


def _draw_table(draw: ImageDraw.ImageDraw, box: Box, flip: bool) -> None:
    x0, y0, x1, y1 = box
    colour = GLYPH_COLOURS["table"]
    draw.rectangle((x0, y0, x1, y0 + 3), fill=colour, outline=(95, 60, 30))
    draw.rectangle((x0 + 1, y0 + 3, x0 + 2, y1), fill=(95, 60, 30))
    draw.rectangle((x1 - 2, y0 + 3, x1 - 1, y1), fill=(95, 60, 30))


def _draw_chair(draw: ImageDraw.ImageDraw, box: Box, flip: bool) -> None:
    x0, y0, x1, y1 = box
    colour = GLYPH_COLOURS["chair"]
    seat_y = y0 + (y1 - y0) // 2
    draw.rectangle((x0, y0, x0 + 1, y1), fill=colour)
    draw.rectangle((x0, seat_y, x1, seat_y + 1), fill=colour)
    draw.rectangle((x1 - 1, seat_y, x1, y1), fill=colour)
    draw.rectangle((x0, y0, x0 + 3, y0 + 3), fill=colour)


def _draw_plates(draw: ImageDraw.ImageDraw, box: Box, flip: bool) -> None:
    x0, y0, x1, y1 = box
    draw.rectangle((x0, y1 - 1, x1, y1), fill=(110, 70, 35))
    step = (x1 - x0) // 3
    for number in range(3):
        left = x0 + number * step
        draw.ellipse(
            (left, y0, left + step, y1 - 1), fill=GLYPH_COLOURS["plates"], outline=(60, 110, 180)
        )


def _draw_clock(draw: ImageDraw.ImageDraw, box: Box, flip: bool) -> None:
    x0, y0, x1, y1 = box
    draw.ellipse(box, fill=GLYPH_COLOURS["clock"])
    draw.ellipse((x0 + 2, y0 + 2, x1 - 2, y1 - 2), fill=(250, 250, 240))
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    draw.line((cx, cy, cx, y0 + 3), fill=(0, 0, 0))
    draw.line((cx, cy, x1 - 3, cy), fill=(0, 0, 0))


def _draw_window(draw: ImageDraw.ImageDraw, box: Box, flip: bool) -> None:
    x0, y0, x1, y1 = box
    draw.rectangle(box, fill=GLYPH_COLOURS["window"], outline=(250, 250, 250))
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    draw.line((cx, y0, cx, y1), fill=(250, 250, 250))
    draw.line((x0, cy, x1, cy), fill=(250, 250, 250))


_DRAWERS: dict[str, Draw] = {
    "oven": _draw_oven,
    "fridge": _draw_fridge,
    "sink": _draw_sink,
    "stool": _draw_stool,
    "toilet": _draw_toilet,
    "bathtub": _draw_bathtub,
    "mirror": _draw_mirror,
    "bed": _draw_bed,
    "lamp": _draw_lamp,
    "wardrobe": _draw_wardrobe,
    "sofa": _draw_sofa,
    "tv": _draw_tv,
    "plant": _draw_plant,
    "table": _draw_table,
    "chair": _draw_chair,
    "plates": _draw_plates,
    "clock": _draw_clock,
    "window": _draw_window,
}


def _overlaps(box: Box, placed: Iterable[Box]) -> bool:
    # One pixel of clearance keeps recorded boxes disjoint, so every pixel has one owner.
    x0, y0, x1, y1 = box
    return any(
        x0 <= b[2] + 1 and b[0] <= x1 + 1 and y0 <= b[3] + 1 and b[1] <= y1 + 1 for b in placed
    )


def _place(
    name: str, rng: np.random.Generator, size: int, horizon: int, placed: list[Box]
) -> Box | None:
    spec = _SIZES[name]
    scale = size / 64
    width = max(3, round(rng.integers(spec.width[0], spec.width[1] + 1) * scale))
    height = max(3, round(rng.integers(spec.height[0], spec.height[1] + 1) * scale))
    for _ in range(_PLACEMENT_TRIES):
        x0 = int(rng.integers(1, size - width))
        if spec.zone == "wall":
            y0 = int(rng.integers(1, max(2, horizon - height - 1)))
        else:
            # Furniture stands on the floor: its foot is below the horizon, its top may not be.
            foot = int(rng.integers(horizon + max(2, height // 3), size - 1))
            y0 = foot - height + 1
        box = (x0, y0, x0 + width - 1, y0 + height - 1)
        if box[1] >= 0 and box[3] < size and not _overlaps(box, placed):
            return box
    return None


def _scene_objects(
    true_label: str, split: str, rng: np.random.Generator
) -> tuple[list[tuple[str, bool]], bool]:
    """Objects to try to draw in order, each with whether to draw it as a bed; and bed-likeness."""
    spurious_rate = _CLOCK_RATE[split][0 if true_label == SPURIOUS_CLASS else 1]
    wanted: list[tuple[str, bool]] = []
    # Planted objects go first so that crowding never changes their rates.
    if rng.random() < spurious_rate:
        wanted.append((SPURIOUS_OBJECT, False))
    bedlike = true_label == "living_room" and rng.random() < _BEDLIKE_SOFA_RATE[split]
    anchors = _ANCHORS[true_label]
    anchor = anchors[int(rng.integers(len(anchors)))]
    wanted.append((anchor, bedlike and anchor == "sofa"))
    if rng.random() < _STOOL_RATE[true_label]:
        wanted.append(("stool", False))
    for name, chance in _EXTRAS[true_label]:
        if rng.random() < chance and name != anchor:
            wanted.append((name, False))
    return wanted, bedlike


def _render(
    wanted: list[tuple[str, bool]], rng: np.random.Generator, size: int
) -> tuple[Image.Image, list[RoomObject]]:
    horizon = int(rng.integers(round(size * 0.38), round(size * 0.48) + 1))
    wall = _WALL_COLOURS[int(rng.integers(len(_WALL_COLOURS)))]
    floor = _FLOOR_COLOURS[int(rng.integers(len(_FLOOR_COLOURS)))]
    image = Image.new("RGB", (size, size), wall)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, horizon, size - 1, size - 1), fill=floor)
    draw.line((0, horizon, size - 1, horizon), fill=tuple(c - 35 for c in floor))
    placed: list[Box] = []
    objects: list[RoomObject] = []
    for name, bedlike in wanted:
        box = _place(name, rng, size, horizon, placed)
        if box is None:
            continue
        flip = bool(rng.integers(2))
        _DRAWERS["bed" if bedlike else name](draw, box, flip)
        placed.append(box)
        objects.append({"name": name, "box": list(box)})
    return image, objects


def _finish(image: Image.Image, split: str, rng: np.random.Generator) -> Image.Image:
    low, high = _BRIGHTNESS[split]
    gain = rng.uniform(low, high)
    noise = rng.normal(0.0, _SENSOR_NOISE_SIGMA, size=(image.height, image.width, 3))
    pixels = np.asarray(image, dtype=np.float32) * gain + noise
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


def _noisy_positions(split: str, count: int, seed: int) -> set[int]:
    # An exact share, not a coin per image, so that small datasets still get the stated rate.
    share = _LABEL_NOISE_SHARE[split]
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], 1_000_003])
    flips = round(count * share)
    return {int(i) for i in rng.choice(count, size=flips, replace=False)} if flips else set()


def generate_rooms(
    *,
    n_train: int = 2000,
    n_test: int = 500,
    n_deployment: int = 300,
    size: int = 64,
    seed: int = 0,
) -> Iterator[RoomSample]:
    """Yield train, then test, then deployment samples; classes are balanced in each split.

    Each image depends only on ``(seed, split, position in split, size)``, so equal arguments
    give byte-identical images and a shorter split is a prefix of a longer one (only the set of
    noisy labels depends on the split's length).
    """
    if size < 32:
        raise ValueError("size must be at least 32 pixels for the glyphs to fit")
    index = 0
    for split, count in (("train", n_train), ("test", n_test), ("deployment", n_deployment)):
        noisy = _noisy_positions(split, count, seed)
        for position in range(count):
            rng = np.random.default_rng([seed, _SPLIT_IDS[split], position, size])
            true_label = CLASSES[position % len(CLASSES)]
            wanted, bedlike = _scene_objects(true_label, split, rng)
            image, objects = _render(wanted, rng, size)
            image = _finish(image, split, rng)
            label = true_label
            if position in noisy:
                others = [c for c in CLASSES if c != true_label]
                label = others[int(rng.integers(len(others)))]
            names = {obj["name"] for obj in objects}
            yield RoomSample(
                index=index,
                split=split,
                label=label,
                true_label=true_label,
                image=image,
                objects=tuple(objects),
                planted=_planted_codes(split, true_label, label, names, bedlike),
            )
            index += 1


def _planted_codes(
    split: str, true_label: str, label: str, names: set[str], bedlike: bool
) -> tuple[str, ...]:
    codes: list[str] = []
    if (SPURIOUS_OBJECT in names) != (true_label == SPURIOUS_CLASS):
        codes.append("spurious_object")
    if bedlike and "sofa" in names:
        codes.append("confusable_sofa")
    if "stool" in names:
        codes.append("kitchen_stool")
    if split == "deployment":
        codes.append("brightness_shift")
    if label != true_label:
        codes.append("label_noise")
    return tuple(codes)


def rooms_to_arrays(
    samples: Iterable[RoomSample], *, use_true_label: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Stack samples into ``uint8 (N, H, W, 3)`` images and ``int64 (N,)`` class indices.

    Recorded labels are the default because that is what a team would train on, noise included.
    """
    images: list[np.ndarray] = []
    labels: list[int] = []
    for sample in samples:
        images.append(np.asarray(sample.image, dtype=np.uint8))
        labels.append(CLASSES.index(sample.true_label if use_true_label else sample.label))
    if not images:
        return np.zeros((0, 0, 0, 3), dtype=np.uint8), np.zeros((0,), dtype=np.int64)
    return np.stack(images), np.asarray(labels, dtype=np.int64)
