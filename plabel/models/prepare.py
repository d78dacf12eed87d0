"""The one call that gives a run its model and the input that model takes.

Decided here, before any training and before a run folder exists, so every mistake is one line:
the model name (close names suggested), the weights (pretrained offline first, or a user file,
with a head that does not fit re-initialised and said so), and the input: channels, size and
normalisation (a dry forward pass proves the model takes that size).

Input channels: built-ins and timm models trained from scratch take the data's channels
(``in_chans``); torchvision models and every model starting from RGB pretrained weights take 3,
and grey images are repeated to 3 channels in the transform. Repeating keeps the pretrained
first convolution and its normalisation exactly as trained, where adapting the convolution to
one channel would change what the pretrained filters see.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from accelerate import Accelerator
from torch import nn

from plabel.config import ConfigError, RunConfig
from plabel.config.model_names import check_model_name
from plabel.data.base import ImageSource
from plabel.data.transforms import InputSpec, plain_spec
from plabel.distributed.processes import decide_on_main
from plabel.models.weights import load_matching, pretrained_file, read_weights
from plabel.models.zoo import LibraryDefaults, build_model, library_defaults


@dataclass
class PreparedModel:
    model: nn.Module
    spec: InputSpec
    num_classes: int
    notes: list[str] = field(default_factory=list)  # what was decided, for the run to print
    initial_state: Optional[dict[str, torch.Tensor]] = None  # the weights it started from (None: random)

    def run_info(self, name: str, data_channels: int, class_names: list[str]) -> dict[str, Any]:
        """What ``run_info.json`` records so the model can be rebuilt without the data."""
        return {
            "model": name, "num_classes": self.num_classes, "channels": self.spec.channels, "data_channels": data_channels,
            "image_size": list(self.spec.size), "input": self.spec.to_dict(), "class_names": class_names,
        }


def prepare_model(accelerator: Accelerator, cfg: RunConfig, source: ImageSource, num_classes: int) -> PreparedModel:
    """Build ``cfg.model`` for ``num_classes`` classes of ``source``'s images; raise ConfigError on bad input."""
    name, ref = cfg.model.name, check_model_name(cfg.model.name)
    defaults = library_defaults(name, cfg.model.pretrained)
    previous = _previous_run_spec(cfg.model.weights)
    channels = model_channels(ref.library, cfg.model.pretrained, previous, source.channels)
    spec = _input_spec(cfg, defaults, previous, channels, source.image_size)
    notes = [f"model {name}: input {channels}x{spec.size[0]}x{spec.size[1]}" + (
        f" (grey images repeated to {channels} channels)" if channels != source.channels else ""
    )]

    torch.manual_seed(cfg.seed)  # identical initial weights on every process
    if cfg.model.pretrained and ref.library == "timm":
        path = _pretrained_path(accelerator, name)
        model = build_model(name, channels, num_classes, pretrained_file=path, dropout=cfg.model.dropout)
        notes.append(f"pretrained weights: {path}")
        if defaults.pretrained_classes not in (None, num_classes):
            notes.append(f"classifier head re-initialised for {num_classes} classes (the pretrained one has {defaults.pretrained_classes})")
    else:
        model = build_model(name, channels, num_classes, dropout=cfg.model.dropout)
        weights = _pretrained_path(accelerator, name) if cfg.model.pretrained else cfg.model.weights
        if weights is not None:
            state = read_weights(weights)
            if ref.library == "torchvision":
                state = {k: v for k, v in state.items() if not k.startswith(("AuxLogits.", "aux1.", "aux2."))}
            notes += [f"starting weights: {weights}", *load_matching(model, state, weights, num_classes)]
    _check_input(model, spec, num_classes, name)
    started_from = copy.deepcopy(model.state_dict()) if (cfg.model.pretrained or cfg.model.weights) else None
    return PreparedModel(model, spec, num_classes, notes, started_from)


def fresh_model(cfg: RunConfig, prepared: PreparedModel, round_index: int) -> dict[str, torch.Tensor]:
    """The weights a re-initialised round starts from: the starting weights again (pretrained or
    given), or a new random draw seeded by the round."""
    if prepared.initial_state is not None:
        return copy.deepcopy(prepared.initial_state)
    torch.manual_seed(cfg.seed + 7919 * round_index)
    return build_model(cfg.model.name, prepared.spec.channels, prepared.num_classes, dropout=cfg.model.dropout).state_dict()


def _pretrained_path(accelerator: Accelerator, name: str) -> str:
    """The main process finds (or downloads) the weights first; the others then find them cached."""
    path = decide_on_main(accelerator, lambda: pretrained_file(name))
    return path if accelerator.is_main_process else pretrained_file(name)


def _previous_run_spec(weights: Optional[str]) -> Optional[InputSpec]:
    """The input spec of a plabel run whose folder is ``model.weights`` (continue as it trained)."""
    if weights is None or not Path(weights).is_dir() or not (Path(weights) / "run_info.json").is_file():
        return None
    info = json.loads((Path(weights) / "run_info.json").read_text())
    return InputSpec.from_dict(info["input"]) if "input" in info else plain_spec(info["channels"], tuple(info["image_size"]))


def model_channels(library: str, pretrained: bool, previous: Optional[InputSpec], data_channels: int) -> int:
    """Channels the model takes: a continued run's; 3 for torchvision's builders and pretrained
    weights (grey data is repeated to fill them); else the data's own."""
    if previous is not None:
        return previous.channels
    if library == "torchvision" or pretrained:
        return 3
    return data_channels


def _input_spec(
    cfg: RunConfig, defaults: LibraryDefaults, previous: Optional[InputSpec], channels: int, data_size: tuple[int, int]
) -> InputSpec:
    """Size: data.image_size, else a pretrained or fixed-size model's, else the data's own.
    Normalisation: the pretrained weights' statistics, a continued run's, else 0.5."""
    size = cfg.data.image_hw()
    if previous is not None:
        return InputSpec(channels, size or previous.size, previous.mean, previous.std, previous.interpolation, previous.crop_pct)
    if size is None:
        size = defaults.size if (cfg.model.pretrained or defaults.fixed_size) and defaults.size else tuple(data_size)
    if cfg.model.pretrained and defaults.mean and defaults.std:
        return InputSpec(channels, size, defaults.mean, defaults.std, defaults.interpolation, defaults.crop_pct)
    return plain_spec(channels, size)


def _check_input(model: nn.Module, spec: InputSpec, num_classes: int, name: str) -> None:
    """One forward pass of a blank image at the chosen size: a model that cannot take it stops here."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, spec.channels, *spec.size))
    except Exception as e:  # a fixed-size ViT, a size the downsampling cannot handle, ...
        raise ConfigError(
            f"data.image_size: {spec.size[0]}x{spec.size[1]} does not fit {name} ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:150]}); set data.image_size to a size it takes"
        ) from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"model.name: {name} returns {shape} for one image, not (1, {num_classes}) class logits")


def load_run_model(run_dir: Path, cfg: RunConfig, info: dict[str, Any]) -> tuple[nn.Module, InputSpec]:
    """A finished run's final model and the input spec it was trained with (no download needed)."""
    from safetensors.torch import load_file

    spec = InputSpec.from_dict(info["input"]) if "input" in info else plain_spec(info["channels"], tuple(info["image_size"]))
    model = build_model(cfg.model.name, spec.channels, info["num_classes"], dropout=cfg.model.dropout)
    from plabel.models.state import plain

    model.load_state_dict(plain(load_file(str(run_dir / "model.safetensors"))))  # plain keys, from a compiled run too
    return model, spec
