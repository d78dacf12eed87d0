"""Building a classifier by name: plabel's built-ins, any timm model, any torchvision classifier.

The libraries are imported only when a name asks for them (timm alone takes seconds to import).
What each library says about its model's input (size, mean/std, interpolation, crop) comes back
as :class:`LibraryDefaults`, which :mod:`plabel.models.prepare` turns into the run's input spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from torch import nn

from plabel.config import ConfigError
from plabel.config.model_names import ModelName, check_model_name, suggest
from plabel.models.builtin import SmallCNN, cifar_resnet18

# torchvision classifiers whose training-mode output carries auxiliary logits: built without them.
_NO_AUX = {"inception_v3": {"aux_logits": False, "init_weights": True}, "googlenet": {"aux_logits": False, "init_weights": True}}


@dataclass(frozen=True)
class LibraryDefaults:
    """What the library says about a model's input and its pretrained classifier."""

    size: Optional[tuple[int, int]] = None  # the size it was trained at (None: built-ins)
    fixed_size: bool = False  # True: it takes no other size (e.g. a ViT's position embeddings)
    mean: Optional[tuple[float, ...]] = None
    std: Optional[tuple[float, ...]] = None
    interpolation: str = "bilinear"
    crop_pct: float = 1.0
    pretrained_classes: Optional[int] = None  # classes of the library's pretrained head


def build_model(
    name: str, in_channels: int, num_classes: int, pretrained_file: Optional[str] = None, dropout: Optional[float] = None
) -> nn.Module:
    """The model ``name`` with ``in_channels`` inputs and ``num_classes`` outputs, randomly initialised.

    ``pretrained_file`` (timm only): the library's pretrained weights from this local file, loaded
    by timm itself (which re-initialises a head of another size and adapts the input channels).
    ``dropout`` (``model.dropout``): the dropout before the classifier; None keeps the network's own.
    Dropout has no weights, so it never changes the state dict's keys.
    """
    ref = check_model_name(name)
    if ref.library == "builtin":
        if ref.name == "resnet18":
            model = cifar_resnet18(in_channels, num_classes)
            if dropout:
                model.fc.register_forward_pre_hook(_DropoutBefore(dropout))
            return model
        return SmallCNN(in_channels, num_classes, batch_norm=ref.name == "small_cnn", dropout=0.3 if dropout is None else dropout)
    if ref.library == "timm":
        timm = _timm(ref)
        overlay = {"pretrained_cfg_overlay": {"file": pretrained_file}} if pretrained_file else {}
        drop = {"drop_rate": dropout} if dropout is not None else {}
        return timm.create_model(
            ref.name, pretrained=pretrained_file is not None, num_classes=num_classes, in_chans=in_channels, **overlay, **drop
        )
    tv = _torchvision(ref)
    if in_channels != 3:
        raise ConfigError(f"model.name: torchvision models take 3 channels, not {in_channels}")  # prepare repeats grey
    kwargs = dict(_NO_AUX.get(ref.name, {}))
    if dropout is not None:
        kwargs["dropout"] = dropout
    try:
        return tv.get_model(ref.name, weights=None, num_classes=num_classes, **kwargs)
    except TypeError as e:
        if dropout is not None and "dropout" in str(e):
            raise ConfigError(f"model.dropout: torchvision's {ref.name} has no dropout option; leave model.dropout unset") from None
        raise


class _DropoutBefore:
    """A forward pre-hook: dropout on a layer's input, in training mode only."""

    def __init__(self, p: float) -> None:
        self.p = p

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (nn.functional.dropout(args[0], self.p, module.training), *args[1:])


def library_defaults(name: str, pretrained: bool) -> LibraryDefaults:
    """What the library says about ``name``'s input; its pretrained weights' when ``pretrained``."""
    ref = check_model_name(name)
    if ref.library == "builtin":
        return LibraryDefaults()
    if ref.library == "timm":
        timm = _timm(ref)
        cfg = timm.models.get_pretrained_cfg(ref.name) or timm.models.get_pretrained_cfg(ref.name.split(".")[0])
        cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg or {})
        size = tuple(cfg["input_size"][1:]) if cfg.get("input_size") else None
        return LibraryDefaults(
            size=size, fixed_size=bool(cfg.get("fixed_input_size")), mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
            std=tuple(cfg.get("std", (0.229, 0.224, 0.225))), interpolation=_interpolation(cfg.get("interpolation")),
            crop_pct=float(cfg.get("crop_pct", 0.875)), pretrained_classes=cfg.get("num_classes"),
        )
    tv = _torchvision(ref)
    if not pretrained:
        return LibraryDefaults()
    weights = tv.get_model_weights(ref.name).DEFAULT
    preset = weights.transforms()
    crop = preset.crop_size[0]
    return LibraryDefaults(
        size=(crop, crop), mean=tuple(preset.mean), std=tuple(preset.std),
        interpolation=preset.interpolation.value, crop_pct=crop / preset.resize_size[0],
        pretrained_classes=len(weights.meta["categories"]),
    )


def _interpolation(name: Optional[str]) -> str:
    return name if name in ("nearest", "bilinear", "bicubic") else "bilinear"


def _timm(ref: ModelName) -> Any:
    try:
        import timm
    except ModuleNotFoundError:
        raise ConfigError(f"model.name: {ref} needs timm; pip install timm") from None
    base = ref.name.split(".")[0]  # a pretrained tag (resnet50.a1_in1k) names the same architecture
    if not timm.is_model(base):
        raise ConfigError(f"model.name: timm has no model {base!r}{suggest(base, timm.list_models())}")
    return timm


def _torchvision(ref: ModelName) -> Any:
    import torchvision.models as tv

    names = tv.list_models(module=tv)  # the classification builders only
    if ref.name not in names:
        raise ConfigError(
            f"model.name: torchvision has no classification model {ref.name!r}{suggest(ref.name, names)}"
        )
    return tv
