"""Pictures for the field set: each kind differs from MNIST in a way users' data does.

Every function draws one 32x32 RGB picture of class ``label`` from its own ``rng`` (seeded by the
picture's set, split and index, so a set is the same whatever the order or number of processes
that build it). Drawing happens at 4x and is downsampled, so edges are antialiased as in photos.

* letters  26 capital letters, many fonts, any colour on any background, moved and turned a little
* shapes   10 filled shapes at varied scale (a quarter to nine tenths of the picture) and position,
           on cluttered backgrounds
* textures 10 patterns (stripes of four orientations, checks, dots, rings, waves, crosshatch, speckle)
           at random frequency, phase and colours
* house    10 printed digits between parts of their neighbours, as in photographed house numbers
* signs    10 (shape, colour) pairs on greyish grounds: the set where colour carries the class
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

SIZE = 32
UP = 4  # drawn at 4x, then downsampled
LETTERS = tuple(chr(ord("A") + i) for i in range(26))
SHAPES = ("circle", "ring", "square", "triangle", "diamond", "star", "cross", "hexagon", "crescent", "arrow")
TEXTURES = ("stripes_h", "stripes_v", "stripes_up", "stripes_down", "checks", "dots", "rings", "waves", "crosshatch", "speckle")
DIGITS = tuple(str(d) for d in range(10))

# Latin fonts from Debian's font packages; others on the machine (scripts without A-Z) are skipped.
FONT_PATTERN = ("DejaVu", "Liberation", "Free", "Carlito", "Caladea", "Lato", "OpenSans", "LinLibertine",
                "Cantarell", "Roboto", "NotoSans-", "NotoSerif-", "NotoSansMono-")


def find_fonts(roots: Sequence[str] = ("/usr/share/fonts",)) -> list[Path]:
    """The machine's Latin TrueType/OpenType fonts that draw A-Z and 0-9, sorted by file name."""
    found = []
    for root in roots:
        for path in sorted(Path(root).rglob("*")):
            if path.suffix.lower() in (".ttf", ".otf") and path.name.startswith(FONT_PATTERN) and _draws_latin(path):
                found.append(path)
    return sorted(found, key=lambda p: p.name)


def _draws_latin(path: Path) -> bool:
    try:
        font = ImageFont.truetype(str(path), 40)
    except OSError:
        return False
    def drawn(text: str) -> tuple[tuple[int, int], bytes]:
        mask = font.getmask(text)
        return mask.size, bytes(mask)  # the glyph's pixels

    missing = drawn("\uffff")  # this font's .notdef box
    return all(font.getmask(c).getbbox() and drawn(c) != missing for c in "AQZ09")


def load_font(fonts: Sequence[Path], rng: np.random.Generator, size: int) -> ImageFont.FreeTypeFont:
    if not fonts:  # no font packages: Pillow's own scalable font (one face only)
        return ImageFont.load_default(size)
    return ImageFont.truetype(str(fonts[int(rng.integers(len(fonts)))]), size)


def _colours(rng: np.random.Generator, contrast: float = 90.0) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A background and a foreground colour whose brightness differs by at least ``contrast``."""
    while True:
        bg, fg = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        if abs(float(bg @ [0.299, 0.587, 0.114]) - float(fg @ [0.299, 0.587, 0.114])) >= contrast:
            return tuple(int(v) for v in bg), tuple(int(v) for v in fg)


def _background(rng: np.random.Generator, colour: tuple[int, ...], clutter: int) -> Image.Image:
    """A tinted gradient with ``clutter`` faint strokes and blobs."""
    n = SIZE * UP
    steps = np.linspace(-1, 1, n, dtype=np.float32)
    ramp = steps[:, None, None] * rng.uniform(-30, 30, 3) + steps[None, :, None] * rng.uniform(-30, 30, 3)
    pixels = np.clip(np.asarray(colour, np.float32) + ramp, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    for _ in range(clutter):
        tint = tuple(int(np.clip(c + rng.integers(-45, 46), 0, 255)) for c in colour)
        x0, y0, x1, y1 = (int(v) for v in rng.integers(0, n, 4))
        if rng.random() < 0.5:
            draw.line((x0, y0, x1, y1), fill=tint, width=int(rng.integers(2, 8)))
        else:
            draw.ellipse((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), outline=tint, width=int(rng.integers(2, 6)))
    return image


def _finish(image: Image.Image, rng: np.random.Generator, noise: float = 8.0) -> Image.Image:
    """Downsample to 32x32, a little blur sometimes, sensor noise."""
    small = image.resize((SIZE, SIZE), Image.Resampling.LANCZOS)
    if rng.random() < 0.3:
        small = small.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 0.8))))
    pixels = np.asarray(small, np.float32) + rng.normal(0, noise, (SIZE, SIZE, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _glyph(text: str, font: ImageFont.FreeTypeFont, fg: tuple[int, ...], angle: float) -> Image.Image:
    """``text`` as an RGBA tile, turned by ``angle`` degrees."""
    left, top, right, bottom = font.getbbox(text)
    tile = Image.new("RGBA", (right - left + 8, bottom - top + 8), (0, 0, 0, 0))
    ImageDraw.Draw(tile).text((4 - left, 4 - top), text, font=font, fill=(*fg, 255))
    return tile.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)


def _paste_centred(image: Image.Image, tile: Image.Image, cx: float, cy: float) -> None:
    image.paste(tile, (int(cx - tile.width / 2), int(cy - tile.height / 2)), tile)


def letter(label: int, rng: np.random.Generator, fonts: Sequence[Path]) -> Image.Image:
    bg, fg = _colours(rng)
    image = _background(rng, bg, int(rng.integers(0, 4)))
    font = load_font(fonts, rng, int(rng.integers(16, 27)) * UP)
    tile = _glyph(LETTERS[label], font, fg, float(rng.uniform(-15, 15)))
    scale = min(1.0, 0.9 * SIZE * UP / max(tile.width, tile.height))
    if scale < 1.0:
        tile = tile.resize((max(1, int(tile.width * scale)), max(1, int(tile.height * scale))), Image.Resampling.BICUBIC)
    c = SIZE * UP / 2
    _paste_centred(image, tile, c + rng.uniform(-3, 3) * UP, c + rng.uniform(-3, 3) * UP)
    return _finish(image, rng)


def _polygon(name: str, cx: float, cy: float, r: float, turn: float) -> list[tuple[float, float]]:
    def ring(k: int, radii: Sequence[float], phase: float) -> list[tuple[float, float]]:
        return [(cx + radii[i % len(radii)] * math.cos(phase + turn + 2 * math.pi * i / k),
                 cy + radii[i % len(radii)] * math.sin(phase + turn + 2 * math.pi * i / k)) for i in range(k)]

    if name == "square":
        return ring(4, [r], math.pi / 4)
    if name == "diamond":
        return [(cx, cy - r), (cx + 0.62 * r, cy), (cx, cy + r), (cx - 0.62 * r, cy)]
    if name == "triangle":
        return ring(3, [r], -math.pi / 2)
    if name == "hexagon":
        return ring(6, [r], 0)
    if name == "star":
        return ring(10, [r, 0.42 * r], -math.pi / 2)
    if name == "cross":
        w = 0.34 * r
        return [(cx - w, cy - r), (cx + w, cy - r), (cx + w, cy - w), (cx + r, cy - w), (cx + r, cy + w), (cx + w, cy + w),
                (cx + w, cy + r), (cx - w, cy + r), (cx - w, cy + w), (cx - r, cy + w), (cx - r, cy - w), (cx - w, cy - w)]
    if name == "arrow":  # pointing right
        w = 0.3 * r
        return [(cx - r, cy - w), (cx + 0.1 * r, cy - w), (cx + 0.1 * r, cy - r), (cx + r, cy), (cx + 0.1 * r, cy + r),
                (cx + 0.1 * r, cy + w), (cx - r, cy + w)]
    raise ValueError(name)


def shape(label: int, rng: np.random.Generator, fonts: Sequence[Path]) -> Image.Image:
    bg, fg = _colours(rng, 70)
    image = _background(rng, bg, int(rng.integers(0, 4)))
    draw = ImageDraw.Draw(image)
    n = SIZE * UP
    r = rng.uniform(0.14, 0.45) * n  # a quarter to nine tenths of the picture across
    cx, cy = (float(v) for v in rng.uniform(r * 0.8, n - r * 0.8, 2))
    name, turn = SHAPES[label], math.radians(float(rng.uniform(-20, 20)))
    if name == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fg)
    elif name == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=fg, width=max(2, int(0.3 * r)))
    elif name == "crescent":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fg)
        dx = 0.45 * r * math.cos(turn)
        draw.ellipse((cx - r + dx, cy - r - 0.2 * r, cx + r + dx, cy + r - 0.2 * r), fill=bg)
    else:
        draw.polygon(_polygon(name, cx, cy, r, turn), fill=fg)
    return _finish(image, rng)


def texture(label: int, rng: np.random.Generator, fonts: Sequence[Path]) -> Image.Image:
    bg, fg = _colours(rng, 60)
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    period = float(rng.uniform(3.5, 9.0))
    phase = float(rng.uniform(0, 2 * math.pi))
    jitter = math.radians(float(rng.uniform(-10, 10)))
    name = TEXTURES[label]

    def wave(angle: float) -> np.ndarray:
        a = angle + jitter
        return np.sin(2 * math.pi * (x * math.cos(a) + y * math.sin(a)) / period + phase)

    if name.startswith("stripes"):
        angle = {"stripes_h": math.pi / 2, "stripes_v": 0.0, "stripes_up": math.pi / 4, "stripes_down": -math.pi / 4}[name]
        mask = wave(angle) > 0
    elif name == "checks":
        mask = (wave(0.0) > 0) ^ (wave(math.pi / 2) > 0)
    elif name == "crosshatch":
        mask = (np.abs(wave(math.pi / 4)) > 0.85) | (np.abs(wave(-math.pi / 4)) > 0.85)
    elif name == "dots":
        mask = (wave(0.0) + wave(math.pi / 2)) > 1.2
    elif name == "rings":
        cx, cy = rng.uniform(0, SIZE, 2)
        mask = np.sin(2 * math.pi * np.hypot(x - cx, y - cy) / period + phase) > 0
    elif name == "waves":
        mask = np.sin(2 * math.pi * y / period + 2.2 * np.sin(2 * math.pi * x / (2.5 * period)) + phase) > 0
    else:  # speckle: sparse random dots of a few pixels
        mask = rng.random((SIZE, SIZE)) < rng.uniform(0.12, 0.3)
    pixels = np.where(mask[:, :, None], np.asarray(fg, np.float32), np.asarray(bg, np.float32))
    pixels += rng.normal(0, 10, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def house_number(label: int, rng: np.random.Generator, fonts: Sequence[Path]) -> Image.Image:
    bg, fg = _colours(rng, 80)
    image = _background(rng, bg, int(rng.integers(0, 3)))
    font = load_font(fonts, rng, int(rng.integers(20, 30)) * UP)
    angle = float(rng.uniform(-8, 8))
    centre = _glyph(DIGITS[label], font, fg, angle)
    c = SIZE * UP / 2
    cx, cy = c + rng.uniform(-2, 2) * UP, c + rng.uniform(-2, 2) * UP
    for side in (-1, 1):  # neighbours, cut by the picture's edge, never over the centre digit
        if rng.random() < 0.8:
            neighbour = _glyph(DIGITS[int(rng.integers(10))], font, fg, angle)
            gap = (centre.width + neighbour.width) / 2 * rng.uniform(0.95, 1.15)
            _paste_centred(image, neighbour, cx + side * gap, cy)
    _paste_centred(image, centre, cx, cy)
    return _finish(image, rng, 10.0)


# Signs: the class is a (shape, colour) pair, and every colour and shape is in two classes or more,
# so a model needs both: the one set where colour carries the class (the others draw any colour).
SIGNS = (("circle", "red"), ("circle", "blue"), ("triangle", "red"), ("triangle", "yellow"), ("square", "blue"),
         ("square", "green"), ("diamond", "yellow"), ("diamond", "red"), ("hexagon", "green"), ("hexagon", "blue"))
SIGN_COLOURS = {"red": (200, 30, 35), "blue": (30, 70, 190), "yellow": (235, 200, 30), "green": (35, 150, 60)}


def sign(label: int, rng: np.random.Generator, fonts: Sequence[Path]) -> Image.Image:
    name, colour = SIGNS[label]
    grey = rng.integers(60, 220)
    bg = tuple(int(np.clip(grey + rng.integers(-25, 26), 0, 255)) for _ in range(3))  # a greyish ground, any brightness
    image = _background(rng, bg, int(rng.integers(0, 4)))
    draw = ImageDraw.Draw(image)
    n = SIZE * UP
    r = rng.uniform(0.22, 0.45) * n
    cx, cy = (float(v) for v in rng.uniform(r * 0.85, n - r * 0.85, 2))
    light = rng.uniform(0.75, 1.15)  # lighting and paint vary; the hue stays the class's
    fill = tuple(int(np.clip(c * light + rng.integers(-15, 16), 0, 255)) for c in SIGN_COLOURS[colour])
    if name == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon(_polygon(name, cx, cy, r, math.radians(float(rng.uniform(-12, 12)))), fill=fill)
    return _finish(image, rng)


KINDS: dict[str, tuple[tuple[str, ...], Callable[[int, np.random.Generator, Sequence[Path]], Image.Image]]] = {
    "letters": (LETTERS, letter),
    "shapes": (SHAPES, shape),
    "textures": (TEXTURES, texture),
    "house": (DIGITS, house_number),
    "signs": (tuple(f"{colour}_{shape}" for shape, colour in SIGNS), sign),
}
