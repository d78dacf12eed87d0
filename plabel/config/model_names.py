"""Model names as users write them: a built-in name, ``timm/<name>`` or ``torchvision/<name>``.

Only the form is checked here (the config does it, without importing a library); whether the
library knows the name is checked when the model is built (``plabel/models/zoo.py``), with close
matches suggested. It lives with the config, which checks it, so the config never imports models.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from plabel.config.errors import ConfigError

BUILTIN = ("small_cnn", "small_cnn_nobn", "resnet18")
LIBRARIES = ("timm", "torchvision")


@dataclass(frozen=True)
class ModelName:
    library: str  # "builtin", "timm" or "torchvision"
    name: str  # the name inside that library

    def __str__(self) -> str:
        return self.name if self.library == "builtin" else f"{self.library}/{self.name}"


def check_model_name(text: str) -> ModelName:
    """Parse ``model.name``; a ConfigError names the forms (and a close built-in) when it fits none."""
    library, _, rest = text.partition("/")
    if library in LIBRARIES and rest:
        return ModelName(library, rest)
    if text in BUILTIN:
        return ModelName("builtin", text)
    close = difflib.get_close_matches(text, BUILTIN, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise ConfigError(
        f"model.name: unknown model {text!r}; {hint}use {', '.join(BUILTIN)}, timm/<name> (any timm model) or "
        "torchvision/<name> (any torchvision classification builder)"
    )


def suggest(name: str, known: list[str]) -> str:
    """`` (did you mean a, b, c?)`` for the names in ``known`` closest to ``name``, or ``""``."""
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else ""
