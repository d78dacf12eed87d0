"""What the speed benchmarks share: the model a run would build for the grey digits, its input
transform, and the autocast a bare loop would write."""

from __future__ import annotations

import argparse
from typing import Any

import torch

from plabel.bench.digits import NUM_CLASSES
from plabel.config.model_names import check_model_name
from plabel.data.transforms import build_transform, plain_spec
from plabel.models import build_model
from plabel.models.prepare import model_channels

EPS = 1e-10  # PseudoConfig.eps's default


def channels(name: str) -> int:
    """Channels ``--model`` takes for the grey digits, as a run decides (torchvision's: 3, grey repeated)."""
    return model_channels(check_model_name(name).library, False, None, 1)


def input_transform(cfg: argparse.Namespace, augment: str, train: bool) -> Any:
    """The digits (28x28) as the model takes them: resized to ``--image-size`` when it differs."""
    size = cfg.image_size
    return build_transform(1, plain_spec(channels(cfg.model), (size, size)), augment, train, resize=size != 28)


def seeded_model(name: str, channels_last: bool, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(name, channels(name), NUM_CLASSES)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def autocast(device: torch.device, mixed_precision: str) -> torch.autocast:
    """What a bare loop would write; plabel's paths use ``accelerator.autocast`` instead."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=mixed_precision == "bf16")
