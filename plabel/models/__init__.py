"""Networks: the built-ins (``builtin.py``), any timm or torchvision classifier by name
(``zoo.py``, names checked in ``names.py``), pretrained and user weights (``weights.py``), and
the one call that prepares a run's model and its input (``prepare.py``).

Importing this package loads nothing heavy (the config checks model names through it).
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:  # PEP 562: ``from plabel.models import build_model`` stays cheap to import
    if name == "build_model":
        from plabel.models.zoo import build_model

        return build_model
    raise AttributeError(name)
