"""What ``Run.predict`` takes: PIL images, paths, folders, numpy arrays or tensors, one or many.

Each item becomes a uint8 (C, H, W) tensor in the run's data channels (grey or colour, as the run's
images were decoded), or an error message for that item alone: one unreadable file does not stop
the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import numpy as np
import torch

from plabel.config import ConfigError
from plabel.data.pixels import DECODE_ERRORS, MODES, decode_failure, to_uint8_chw

Image = Any  # PIL.Image.Image, numpy array, torch tensor, str or Path
Images = Union[Image, Iterable[Image]]


@dataclass(frozen=True)
class Item:
    """One input: a name for the results (its path, or its position) and its pixels or its error."""

    name: str
    pixels: Optional[torch.Tensor]  # uint8 (C, H, W)
    error: Optional[str] = None


def expand(images: Images) -> list[tuple[str, Image]]:
    """(name, item) for every image: a folder stands for its image files (any depth, sorted), as
    ``data.unlabeled.source folder`` lists them; a single image stands for itself."""
    from PIL import Image as PILImage

    single = isinstance(images, (str, Path, PILImage.Image, np.ndarray, torch.Tensor))
    out: list[tuple[str, Image]] = []
    for position, item in enumerate([images] if single else list(images)):
        if isinstance(item, (str, Path)) and Path(item).is_dir():
            from plabel.data.pool_index import scan_folder

            index = scan_folder(Path(item), "images")
            out += [(str(index.path(i)), index.path(i)) for i in range(len(index))]
        else:
            out.append((str(item) if isinstance(item, (str, Path)) else f"#{position}", item))
    return out


def to_pixels(name: str, item: Image, channels: int) -> Item:
    """``item`` as a uint8 (channels, H, W) tensor, or the reason it cannot be one."""
    from PIL import Image as PILImage

    mode = MODES[channels]
    try:
        if isinstance(item, (str, Path)):
            if not Path(item).is_file():
                return Item(name, None, f"{item}: no such file")
            with PILImage.open(item) as opened:
                return Item(name, to_uint8_chw(opened, mode))
        if isinstance(item, PILImage.Image):
            return Item(name, to_uint8_chw(item, mode))
        if isinstance(item, np.ndarray):
            return Item(name, _from_array(torch.from_numpy(np.array(item)), channels, channels_last=True))
        if isinstance(item, torch.Tensor):
            return Item(name, _from_array(item.detach().cpu(), channels, channels_last=False))
    except DECODE_ERRORS as e:
        return Item(name, None, f"{name}: {decode_failure(e)}")
    except ValueError as e:
        return Item(name, None, f"{name}: {e}")
    raise ConfigError(f"images: {type(item).__name__} is not an image; give PIL images, paths, folders, numpy arrays or tensors")


def _from_array(t: torch.Tensor, channels: int, channels_last: bool) -> torch.Tensor:
    """An (H, W), (H, W, C) numpy-style or (C, H, W) tensor-style array as uint8 (channels, H, W).

    Floats are taken as pixels in [0, 1] (torchvision's convention), integers as 0-255."""
    if t.dim() == 2:
        t = t[None]
    elif t.dim() == 3 and channels_last:
        t = t.permute(2, 0, 1)
    if t.dim() != 3 or t.shape[0] not in (1, 3, 4):
        raise ValueError(f"shape {tuple(t.shape)} is not an image (H x W, H x W x C, or C x H x W with 1, 3 or 4 channels)")
    if t.is_floating_point():
        t = (t.clamp(0, 1) * 255).round()
    t = t.clamp(0, 255).to(torch.uint8)
    if t.shape[0] == 4:  # RGBA: drop alpha, as PIL's RGB conversion does over black
        t = t[:3]
    if t.shape[0] == channels:
        return t.contiguous()
    if channels == 3:  # grey -> colour, as PIL's L -> RGB
        return t.expand(3, -1, -1).contiguous()
    # colour -> grey exactly as PIL's "L" conversion computes it (ITU-R 601-2 luma in 16-bit fixed point)
    weights = torch.tensor([19595, 38470, 7471], dtype=torch.int64)[:, None, None]
    return ((t.to(torch.int64) * weights).sum(0, keepdim=True) + 0x8000).div(1 << 16, rounding_mode="floor").to(torch.uint8)
