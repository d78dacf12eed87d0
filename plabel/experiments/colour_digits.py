"""An image folder like the ones users bring, made offline from the embedded MNIST digits.

    python -m plabel.experiments.colour_digits --out data/colour-digits [--corrupt 3]

Each of the 5,000 digits becomes a colour picture of a random size (``--min-size`` to
``--max-size`` pixels a side, not square), with a random light stroke colour on a random dark
ground, and noise; a third are saved as JPEG, the rest PNG; one in ten is saved grey. Folders are named after
the digits (``zero`` ... ``nine``), so labels are class names, as in a Hugging Face imagefolder.
``--corrupt N`` adds N files that are not images, to show how a run skips them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from plabel.config.args import SpellingsParser
from plabel.data.files import open_embedded

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def colour_digit(digit: np.ndarray, rng: np.random.Generator, min_size: int, max_size: int) -> Image.Image:
    """A 28x28 grey digit as a colour picture of a random size."""
    h, w = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
    ink = digit.astype(np.float32)[:, :, None] / 255.0
    # Any hue, but the stroke is lighter than the ground (as in the digits), so shape, not colour, tells the class.
    foreground = rng.integers(140, 256, size=3).astype(np.float32)
    background = rng.integers(0, 100, size=3).astype(np.float32)
    pixels = ink * foreground + (1 - ink) * background + rng.normal(0, 12, size=(28, 28, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).resize((w, h), Image.Resampling.BILINEAR)


def write_folder(out: Path, corrupt: int, min_size: int, max_size: int, seed: int, limit: Optional[int] = None) -> int:
    """Write the folder; returns how many pictures it holds (corrupt files not counted)."""
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"colour_digits: {out} already holds files; choose a new --out")
    source = open_embedded()
    rng = np.random.default_rng(seed)
    for name in NAMES:
        (out / name).mkdir(parents=True, exist_ok=True)
    count = len(source) if limit is None else min(limit, len(source))
    for i in range(count):
        label = int(source.labels[i])
        picture = colour_digit(source.images[i, 0].numpy(), rng, min_size, max_size)
        if rng.random() < 0.1:
            picture = picture.convert("L")
        suffix = "jpg" if rng.random() < 1 / 3 else "png"
        picture.save(out / NAMES[label] / f"{i:05d}.{suffix}", quality=90)
    for j in range(corrupt):
        (out / NAMES[j % 10] / f"corrupt-{j}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    return count


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = SpellingsParser(prog="python -m plabel.experiments.colour_digits", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder to create (must be new or empty)")
    parser.add_argument("--corrupt", type=int, default=0, help="files that are not images, to add (default: 0)")
    parser.add_argument("--min-size", type=int, default=32, help="smallest side in pixels (default: 32)")
    parser.add_argument("--max-size", type=int, default=96, help="largest side in pixels (default: 96)")
    parser.add_argument("--seed", type=int, default=0, help="colours, sizes and formats (default: 0)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N digits (default: all 5,000)")
    args = parser.parse_args(argv)
    n = write_folder(Path(args.out), args.corrupt, args.min_size, args.max_size, args.seed, args.limit)
    print(f"wrote {n} pictures in {len(NAMES)} class folders (+{args.corrupt} corrupt files) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
