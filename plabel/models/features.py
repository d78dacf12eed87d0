"""A model's features: the input of its classifier head, for any model (built-in, timm, torchvision)."""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch
from torch import nn


def classifier_module(model: nn.Module, num_classes: int) -> tuple[str, nn.Module]:
    """The classifier head: the last layer whose weight has ``num_classes`` outputs (a Linear, or
    SqueezeNet's final 1x1 convolution). Raises ValueError when there is none."""
    heads = [
        (name, module) for name, module in model.named_modules()
        if isinstance(getattr(module, "weight", None), torch.Tensor) and module.weight.dim() >= 2
        and module.weight.shape[0] == num_classes
    ]
    if not heads:
        raise ValueError(f"no layer with {num_classes} outputs: cannot find the classifier head")
    return heads[-1]


@contextlib.contextmanager
def capture_features(model: nn.Module, num_classes: Optional[int], enabled: bool = True) -> Iterator[list[torch.Tensor]]:
    """While active, every forward pass appends its features, (batch, d), to the yielded list.

    The features are the classifier head's input; a feature map (batch, c, h, w) is averaged over
    its positions. Disabled (or without ``num_classes``): the list stays empty and nothing is hooked.
    """
    store: list[torch.Tensor] = []
    if not enabled or num_classes is None:
        yield store
        return
    _, head = classifier_module(model, num_classes)

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        x = inputs[0]
        store.append(x.mean(dim=(2, 3)) if x.dim() == 4 else x.flatten(1))

    handle = head.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()
