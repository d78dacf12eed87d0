"""A dirty pool, made offline: junk images added to the unlabeled pool (``data.junk_share``).

Junk has no class (label ``JUNK``): a pseudo-label on it is always wrong, and it never enters the
labeled or test set. Each junk image is a function of (seed, its number) alone, so every process
and every resumed run sees the same junk. The kinds go from easy for a confidence score (noise,
blank or saturated images) to hard (a digit's own pixels shuffled, letters from another domain,
geometric shapes, a zoomed-in fragment of a digit's stroke).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.transforms.v2.functional import resize

from plabel.config.schema import JUNK_KINDS
from plabel.data.base import ImageSource

JUNK = -2  # the label of a junk sample (UNREADABLE, -1, marks images that could not be decoded)
__all__ = ["JUNK", "JUNK_KINDS", "JunkedSource", "junk_count"]
_LETTERS = "ABCDEFGHJKLMNPQRTUVWXYZ"  # no O, I or S: too close to 0, 1 and 5


def junk_count(pool_size: int, share: float) -> int:
    """Junk images to add so that they are ``share`` of the pool they join."""
    return round(pool_size * share / (1.0 - share)) if share > 0 else 0


class JunkedSource(ImageSource):
    """``base``'s samples (unchanged indices and labels), then ``count`` junk images labelled ``JUNK``."""

    def __init__(self, base: ImageSource, count: int, kinds: list[str], seed: int) -> None:
        self.base, self.count, self.kinds, self.seed = base, count, list(kinds), seed
        self.labels = torch.cat([base.labels, torch.full((count,), JUNK, dtype=torch.long)])
        self.num_classes, self.class_names = base.num_classes, base.class_names
        self.channels, self.image_size = base.channels, base.image_size
        self.uniform_size, self.may_fail = base.uniform_size, base.may_fail
        self.description = f"{base.description} + {count} junk images ({', '.join(self.kinds)})"

    def image(self, index: int) -> Any:
        if index < len(self.base.labels):
            return self.base.image(index)
        return self.junk_image(index - len(self.base.labels))

    def describe(self, index: int) -> str:
        if index < len(self.base.labels):
            return self.base.describe(index)
        j = index - len(self.base.labels)
        return f"junk {j} ({self.kind(j)})"

    def sample_name(self, index: int) -> str:
        if index < len(self.base.labels):
            return self.base.sample_name(index)
        return f"junk {index - len(self.base.labels)}"

    def kind(self, j: int) -> str:
        return self.kinds[j % len(self.kinds)]

    def junk_image(self, j: int) -> Any:
        """Junk image ``j``: uint8 (channels, H, W), a function of (seed, j)."""
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + 7919 * j + 17) % (2**63 - 1))
        c, (h, w) = self.channels, self.image_size
        kind = self.kind(j)
        if kind == "gaussian":
            return (torch.randn((c, h, w), generator=g) * 64 + 128).clamp(0, 255).to(torch.uint8)
        if kind == "uniform":
            return torch.randint(0, 256, (c, h, w), generator=g, dtype=torch.uint8)
        if kind == "blank":
            return torch.zeros((c, h, w), dtype=torch.uint8)
        if kind == "saturated":
            return torch.full((c, h, w), 255, dtype=torch.uint8)
        digit = self._base_image(g)
        if kind == "shuffled":  # a real digit's pixels, permuted: its intensities, no shape
            flat = digit.reshape(digit.shape[0], -1)
            return flat[:, torch.randperm(flat.shape[1], generator=g)].reshape(digit.shape)
        if kind == "fragments":  # a quarter of a digit, zoomed in: strokes, no digit
            top, left = (int(v) for v in torch.randint(0, max(1, h // 2), (2,), generator=g))
            piece = digit[:, top : top + h // 2, left : left + w // 2]
            return resize(piece, [h, w], antialias=True)
        return self._drawn(kind, g)

    def _base_image(self, g: Any) -> Any:
        n = len(self.base.labels)
        for _ in range(16):  # a readable one; a source of unreadable images alone gives noise
            try:
                return self.base.image(int(torch.randint(0, n, (1,), generator=g)))
            except Exception:
                continue
        return torch.randint(0, 256, (self.channels, *self.image_size), generator=g, dtype=torch.uint8)

    def _drawn(self, kind: str, g: Any) -> Any:
        """letters: a random capital letter; shapes: a random circle, box, triangle or bar. Light on dark."""
        h, w = self.image_size
        canvas = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(canvas)
        r = torch.rand(6, generator=g).tolist()
        if kind == "letters":
            font = ImageFont.load_default(size=max(8, int(min(h, w) * (0.6 + 0.25 * r[0]))))
            letter = _LETTERS[int(r[1] * len(_LETTERS))]
            draw.text((w * (0.4 + 0.2 * r[2]), h * (0.4 + 0.2 * r[3])), letter, fill=255, font=font, anchor="mm")
        else:
            x0, y0 = w * (0.1 + 0.2 * r[0]), h * (0.1 + 0.2 * r[1])
            x1, y1 = w * (0.7 + 0.2 * r[2]), h * (0.7 + 0.2 * r[3])
            shape = int(r[4] * 4)
            width = max(1, int(min(h, w) / 10))
            if shape == 0:
                draw.ellipse((x0, y0, x1, y1), outline=255, width=width)
            elif shape == 1:
                draw.rectangle((x0, y0, x1, y1), outline=255, width=width)
            elif shape == 2:
                draw.polygon([(x0, y1), ((x0 + x1) / 2, y0), (x1, y1)], outline=255, width=width)
            else:
                draw.rectangle((x0, (y0 + y1) / 2 - width, x1, (y0 + y1) / 2 + width), fill=255)
        pixels = torch.from_numpy(np.asarray(canvas, dtype=np.uint8).copy())[None]
        return pixels.expand(self.channels, -1, -1).clone()
