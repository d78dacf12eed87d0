"""plabel's own networks (``model.name`` small_cnn, small_cnn_nobn, resnet18). Plain nn.Modules: no parallelism in here."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet18


class SmallCNN(nn.Module):
    """Two conv blocks and a two-layer head for 28x28 inputs (about 0.46 M parameters).

    ``batch_norm=False`` drops the BatchNorm layers (``small_cnn_nobn``): the kind of plain
    network the seed article trained, kept so its noise-entropy experiment can be compared."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, batch_norm: bool = True, dropout: float = 0.3) -> None:
        super().__init__()

        def conv(cin: int, cout: int) -> list[nn.Module]:
            norm: list[nn.Module] = [nn.BatchNorm2d(cout)] if batch_norm else []
            return [nn.Conv2d(cin, cout, 3, padding=1), *norm, nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *conv(in_channels, 32), *conv(32, 32),
            nn.MaxPool2d(2),  # 14x14
            *conv(32, 64), *conv(64, 64),
            nn.MaxPool2d(2),  # 7x7 for 28x28 inputs
            nn.AdaptiveAvgPool2d(7),  # a no-op at 28x28; lets 32x32 inputs through too
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(64 * 7 * 7, 128), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def cifar_resnet18(in_channels: int = 3, num_classes: int = 10) -> nn.Module:
    """torchvision's ResNet-18 with the usual CIFAR stem: 3x3 stride-1 conv and no max-pool,
    so 32x32 inputs keep enough resolution for the later stages."""
    model = resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model
