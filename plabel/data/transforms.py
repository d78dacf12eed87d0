"""From a source's uint8 ``(C, H, W)`` image to the model's input: size, channels, augmentation,
normalisation. What the model wants is one :class:`InputSpec`, resolved once per run and stored
in ``run_info.json`` so ``plabel score`` preprocesses exactly as training did."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torchvision.transforms import InterpolationMode, v2

from plabel.data.base import ImageSource

# Up to this size a colour image is treated like CIFAR (padded random crop); above it like
# ImageNet (random-resized crop), the recipes those image sizes are trained with.
SMALL_IMAGE = 64


@dataclass(frozen=True)
class InputSpec:
    """What the model takes, and how an image is brought there."""

    channels: int  # the model's input channels (grey data is repeated to 3 for RGB models)
    size: tuple[int, int]  # (height, width) of every input
    mean: tuple[float, ...]  # per input channel, in [0, 1] pixel units
    std: tuple[float, ...]
    interpolation: str = "bilinear"  # for resizing
    crop_pct: float = 1.0  # eval: resize the shorter side to size / crop_pct, then centre-crop

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "size": list(self.size), "mean": list(self.mean), "std": list(self.std)}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "InputSpec":
        return InputSpec(
            int(d["channels"]), (int(d["size"][0]), int(d["size"][1])), tuple(d["mean"]), tuple(d["std"]),
            d.get("interpolation", "bilinear"), float(d.get("crop_pct", 1.0)),
        )


class RepeatChannels(torch.nn.Module):
    """Grey (1, H, W) -> (n, H, W) by repeating; other channel counts pass through."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(self.channels, -1, -1) if x.shape[-3] == 1 and self.channels != 1 else x


def source_transform(
    source: ImageSource, spec: InputSpec, augment: str, train: bool, flip: bool = True, moves: str = "crop"
) -> v2.Transform:
    """The transform for images of ``source``; resizing is skipped when every image already fits."""
    fits = source.uniform_size and tuple(source.image_size) == tuple(spec.size)
    return build_transform(source.channels, spec, augment, train, resize=not fits, flip=flip, moves=moves)


def build_transform(
    data_channels: int, spec: InputSpec, augment: str, train: bool, resize: bool = True, flip: bool = True,
    moves: str = "crop",
) -> v2.Transform:
    """uint8 (C, H, W) image -> normalised float32 model input, augmented when ``train``.

    Grey data (``data_channels`` 1) gets small affine moves (digits keep their class under small
    shifts and rotations, not under flips); colour data gets crop + flip (``moves`` "crop", the
    CIFAR recipe) or the digits' affine moves (``moves`` "affine", or the level "affine"): glyphs,
    shapes and signs move, they are not cropped. ``flip`` False: no flips anywhere. Evaluation
    resizes the shorter side and centre-crops, deterministically. ``resize`` False: images already
    have ``spec.size`` (a same-size source), so the pipeline is exactly the no-resize one.
    """
    if augment == "affine":
        augment, moves = "light", "affine"
    interpolation = InterpolationMode(spec.interpolation)
    h, w = spec.size
    steps: list[Any] = []
    augmenting = train and augment != "none"
    large_colour = data_channels != 1 and max(h, w) > SMALL_IMAGE
    if augmenting and large_colour and moves == "crop":
        steps.append(v2.RandomResizedCrop((h, w), interpolation=interpolation, antialias=True))
    elif resize:
        shorter = round(min(h, w) / spec.crop_pct)
        steps += [v2.Resize(shorter, interpolation=interpolation, antialias=True), v2.CenterCrop((h, w))]
    if augmenting:
        steps += _augmentations(data_channels, augment, (h, w), large_colour, flip, moves)
    if spec.channels != data_channels:
        steps.append(RepeatChannels(spec.channels))
    steps.append(v2.ToDtype(torch.float32, scale=True))
    if augmenting and augment in CUTOUT_LEVELS:  # cutout, as FixMatch's strong augmentation ends with
        steps.append(v2.RandomErasing(p=0.5, scale=(0.02, 0.15), value=0.0))
    steps.append(v2.Normalize(list(spec.mean), list(spec.std)))
    return v2.Compose(steps)


# Levels that end with cutout (every level stronger than light).
CUTOUT_LEVELS = ("strong", "elastic", "randaugment", "trivialaugment")


def _augmentations(
    data_channels: int, augment: str, size: tuple[int, int], large_colour: bool, flip: bool = True, moves: str = "crop"
) -> list[Any]:
    """The random moves of one ``data.augment`` level, on the uint8 image (before cutout).

    Grey images (digits) keep their class under small affine moves, not under flips; colour
    images get a crop and a flip. Above that: strong = larger affine (grey) / colour jitter;
    elastic = strong's affine plus an elastic distortion (Simard et al. 2003, the classic MNIST
    student noise); randaugment / trivialaugment = torchvision's policies (Noisy Student / FixMatch
    and TrivialAugment) after the base moves.
    """
    h, w = size
    steps: list[Any] = []
    if data_channels == 1 or moves == "affine":
        if augment in ("strong", "elastic"):
            steps.append(v2.RandomAffine(degrees=15, translate=(0.12, 0.12), scale=(0.85, 1.15), shear=10))
        else:  # light, and the base under the policies (which add their own rotations and shears)
            steps.append(v2.RandomAffine(degrees=10, translate=(0.1, 0.1)))
        if data_channels != 1:  # colour moved as digits are: flips only when asked, jitter when strong
            if flip:
                steps.append(v2.RandomHorizontalFlip())
            if augment in ("strong", "elastic"):
                steps.append(v2.ColorJitter(0.4, 0.4, 0.4, 0.1))
    else:
        if not large_colour:
            steps.append(v2.RandomCrop((h, w), padding=max(1, min(h, w) // 8), padding_mode="reflect"))
        if flip:
            steps.append(v2.RandomHorizontalFlip())
        if augment in ("strong", "elastic"):
            steps.append(v2.ColorJitter(0.4, 0.4, 0.4, 0.1))
    if augment == "elastic":
        # alpha in pixels of displacement before smoothing; sigma ~ 1/7 of a 28-pixel digit.
        steps.append(v2.ElasticTransform(alpha=34.0 * min(h, w) / 28, sigma=4.0 * min(h, w) / 28))
    elif augment == "randaugment":
        steps.append(v2.RandAugment(num_ops=2, magnitude=9))
    elif augment == "trivialaugment":
        steps.append(v2.TrivialAugmentWide())
    return steps


def plain_spec(channels: int, size: tuple[int, int]) -> InputSpec:
    """The spec of a model trained from scratch on this data: mean/std 0.5, plabel's long-standing choice."""
    return InputSpec(channels, size, (0.5,) * channels, (0.5,) * channels)
