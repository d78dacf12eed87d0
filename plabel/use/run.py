"""A trained run, from Python: its model, the preprocessing it was trained with, its class names.

    import plabel
    run = plabel.load_run("runs/mine")                 # the final weights (model.safetensors)
    result = run.predict("photos/", batch_size=256)    # a folder, paths, PIL images, arrays, tensors
    print(result.names[:5], result.probabilities.shape)

Predictions are the numbers ``plabel score`` writes for the same images: the same weights, the same
decoding (the run's grey or colour), the same resize and normalisation, the same entropy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch

from plabel.config import ConfigError, RunConfig
from plabel.data.transforms import InputSpec, build_transform
from plabel.use.inputs import Images, expand, to_pixels

WEIGHTS = {"final": "model.safetensors", "best": "model_best.safetensors"}


@dataclass
class Predictions:
    """One entry per input image, in order; an image that could not be read has label -1, name None,
    NaN scores and its ``errors`` entry says why (the others are scored all the same)."""

    inputs: list[str]  # each image's path, or "#<position>" for an in-memory image
    labels: torch.Tensor  # (n,) int64
    names: list[Optional[str]]
    probabilities: torch.Tensor  # (n, classes) float32
    entropy: torch.Tensor  # (n,) bits, as the pool's selection ranks them
    margin: torch.Tensor  # (n,) top-1 minus top-2 probability
    errors: list[Optional[str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.inputs)


class Run:
    """A finished (or checkpointed) run, ready to predict. Build it with :func:`load_run`."""

    def __init__(self, folder: Path, cfg: RunConfig, info: dict[str, Any], model: torch.nn.Module, weights: Path,
                 device: torch.device, dtype: torch.dtype) -> None:
        self.folder, self.config, self.info, self.weights = folder, cfg, info, weights
        self.model, self.device, self.dtype = model, device, dtype
        self.spec = InputSpec.from_dict(info["input"]) if "input" in info else InputSpec(
            info["channels"], tuple(info["image_size"]), (0.5,) * info["channels"], (0.5,) * info["channels"])
        self.data_channels = int(info.get("data_channels", info["channels"]))
        self.class_names: list[str] = list(info.get("class_names") or [str(c) for c in range(info["num_classes"])])
        self.transform = build_transform(self.data_channels, self.spec, "none", train=False)
        self.eps = cfg.pseudo.eps

    def __repr__(self) -> str:
        return (f"Run({str(self.folder)!r}: {self.config.model.name}, {len(self.class_names)} classes, input "
                f"{self.spec.channels}x{self.spec.size[0]}x{self.spec.size[1]}, weights {self.weights.name}, {self.device})")

    def preprocess(self, image: Any) -> torch.Tensor:
        """One image as the model takes it: float32 (C, H, W), resized, centre-cropped and normalised as in training."""
        (name, item), = expand(image)
        read = to_pixels(name, item, self.data_channels)
        if read.pixels is None:
            raise ConfigError(f"image: {read.error}")
        return self.transform(read.pixels)

    @torch.no_grad()
    def predict(self, images: Images, batch_size: int = 256) -> Predictions:
        """Labels, class names, probabilities, entropy and margin of every image (batched)."""
        from plabel.method.scores import entropy, margin

        if batch_size < 1:
            raise ConfigError(f"batch_size: must be at least 1, got {batch_size}")
        items = [to_pixels(name, item, self.data_channels) for name, item in expand(images)]
        classes = len(self.class_names)
        n = len(items)
        out = Predictions([i.name for i in items], torch.full((n,), -1, dtype=torch.long), [None] * n,
                          torch.full((n, classes), float("nan")), torch.full((n,), float("nan")), torch.full((n,), float("nan")),
                          [i.error for i in items])
        good = [k for k, item in enumerate(items) if item.pixels is not None]
        for start in range(0, len(good), batch_size):
            chunk = good[start : start + batch_size]
            x = torch.stack([self.transform(items[k].pixels) for k in chunk]).to(self.device)
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
                logits = self.model(x.to(memory_format=torch.channels_last) if self.config.train.channels_last else x)
            logits = logits.float().cpu()
            at = torch.tensor(chunk)
            out.labels[at] = logits.argmax(dim=1)
            out.probabilities[at] = torch.softmax(logits, dim=1)
            out.entropy[at] = entropy(logits, self.eps)
            out.margin[at] = margin(logits)
        out.names = [self.class_names[int(c)] if c >= 0 else None for c in out.labels.tolist()]
        return out


def load_run(folder: Union[str, Path], checkpoint: str = "final", device: Optional[Union[str, torch.device]] = None,
             dtype: torch.dtype = torch.float32) -> Run:
    """The run in ``folder`` with its ``checkpoint`` weights: "final" (model.safetensors, the last
    round), "best" (model_best.safetensors, the best round by validation), "newest" (the newest
    checkpoint, for a run that did not finish) or a checkpoint folder's path. ``device``: default
    the GPU when there is one, else the CPU; ``dtype`` float32, or bfloat16/float16 autocast."""
    from safetensors.torch import load_file

    from plabel.commands.common import load_run as read_run
    from plabel.models.zoo import build_model

    run_dir, cfg, info = read_run(str(folder))
    weights = _weights_file(run_dir, checkpoint)
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ConfigError(f"dtype: {dtype} is not float32, bfloat16 or float16")
    channels = InputSpec.from_dict(info["input"]).channels if "input" in info else info["channels"]
    model = build_model(cfg.model.name, channels, info["num_classes"], dropout=cfg.model.dropout)
    try:
        from plabel.models.state import plain

        model.load_state_dict(plain(load_file(str(weights))))  # a checkpoint of a compiled run has prefixed keys
    except Exception as e:  # a truncated or foreign file: one line naming it
        raise ConfigError(f"checkpoint: {weights} could not be loaded into {cfg.model.name} ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    model = model.to(device).eval()
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return Run(run_dir, cfg, info, model, weights, device, dtype)


def _weights_file(run_dir: Path, checkpoint: str) -> Path:
    from plabel.trainer.checkpointer import list_checkpoints

    if checkpoint in WEIGHTS:
        path = run_dir / WEIGHTS[checkpoint]
        if path.is_file():
            return path
        newest = list_checkpoints(run_dir)
        what = ("final weights (the run has not finished)" if checkpoint == "final" else
                "best-round weights (no round was validated: the run had no validation images, or data.val_scope round0 "
                "trained on them after round 0; its model.safetensors is the last round's)")
        offer = f"; its newest checkpoint is {newest[0]}: load_run(..., checkpoint='newest')" if newest else ""
        raise ConfigError(f"checkpoint: {run_dir} has no {WEIGHTS[checkpoint]}, so no {what}{offer}")
    if checkpoint == "newest":
        found = list_checkpoints(run_dir)
        if not found:
            raise ConfigError(f"checkpoint: {run_dir} has no checkpoints")
        return found[0] / "model.safetensors"
    path = Path(checkpoint)
    path = path / "model.safetensors" if path.is_dir() else path
    if not path.is_file():
        raise ConfigError(f"checkpoint: {checkpoint!r} is not final, best, newest or a checkpoint folder of {run_dir}")
    return path
