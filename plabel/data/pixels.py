"""Pixel conversion: any one sample (PIL image, array, nested list, tensor, HF encoded dict) to
uint8 ``(C, H, W)``."""

from __future__ import annotations

import io
import math
from typing import Any, Optional

import numpy as np
import torch
from PIL import Image

# The rest of plabel works on 1-channel (digits) or 3-channel (colour) images.
MODES = {1: "L", 3: "RGB"}
# Everything PIL raises for a file it cannot decode: UnidentifiedImageError and truncated files
# (OSError), bad headers (SyntaxError, ValueError), and images over its pixel limit
# (DecompressionBombError, which derives from none of these). Caught in one place each: the
# sources turn them into UnreadableImage naming the file.
DECODE_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, SyntaxError, EOFError, Image.DecompressionBombError)


def decode_failure(error: BaseException) -> str:
    """Why a file could not be decoded, in one line (with the way out for a decompression bomb)."""
    if isinstance(error, Image.DecompressionBombError):
        return (f"{type(error).__name__}: larger than PIL's limit of {Image.MAX_IMAGE_PIXELS} pixels; for legitimate "
                "large scans raise it with data.max_image_pixels")
    lines = str(error).splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def to_uint8_chw(value: Any, mode: Optional[str] = None) -> torch.Tensor:
    """Convert one sample (PIL image, array, nested list, tensor, HF encoded dict) to uint8 (C, H, W).

    ``mode`` "L" or "RGB" forces 1 or 3 channels; None keeps greyscale as 1 channel and turns
    every other mode (RGBA, palette, CMYK, ...) into RGB. Arrays may be (H, W), (H, W, C),
    (C, H, W) or a flattened square; floats in [0, 1] are scaled to [0, 255].
    Raises ValueError when the value cannot be read as an image.
    """
    from torchvision.transforms.v2.functional import pil_to_tensor

    if isinstance(value, dict) and ("bytes" in value or "path" in value):
        # An HF Image column loaded with decode=False.
        value = Image.open(io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"])
    if not isinstance(value, Image.Image):
        value = Image.fromarray(_as_uint8_hwc(np.asarray(value)))
    target = mode or ("L" if value.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB")
    if value.mode != target:
        value = value.convert(target)
    return pil_to_tensor(value)


def _as_uint8_hwc(array: np.ndarray) -> np.ndarray:
    """An array image as uint8 (H, W) or (H, W, C); see :func:`to_uint8_chw` for the layouts."""
    if array.ndim == 1 and array.size > 0 and math.isqrt(array.size) ** 2 == array.size:
        side = math.isqrt(array.size)
        array = array.reshape(side, side)
    if array.ndim == 3:
        first, last = array.shape[0], array.shape[-1]
        # Channels-last (PIL, HF) unless only the first axis looks like channels, or both do and
        # it is the smaller one: (1, 28, 4) is one 28x4 greyscale image, not 4-channel.
        if first in (1, 3, 4) and (last not in (1, 3, 4) or first < last):
            array = array.transpose(1, 2, 0)
        if array.shape[-1] == 1:
            array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(f"array of shape {array.shape} is not (H, W), (H, W, C), (C, H, W) or a flattened square")
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"pixel dtype {array.dtype} is not numeric")
    low, high = float(array.min()), float(array.max())
    if np.issubdtype(array.dtype, np.floating) and low >= 0.0 and high <= 1.0:
        array = array * 255.0
    elif low < 0 or high > 255:
        raise ValueError(f"pixel values span [{low:g}, {high:g}], outside [0, 255]")
    return np.ascontiguousarray(np.rint(array).astype(np.uint8))
