"""What every config section is made of: a field with its help text, a nested section, the
pydantic setting that makes an unknown key an error, and the range checks shared by the sections."""

from __future__ import annotations

from dataclasses import field
from typing import Any

from pydantic import ConfigDict

from plabel.config.errors import ConfigError


def option(default: Any, help: str, **kw: Any) -> Any:
    """A config field with its ``--help`` text (a list or dict default is copied for each config)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


def section(cls: Any, help: str) -> Any:
    """A nested section (``data``, ``data.train``, ...)."""
    return field(default_factory=cls, metadata={"help": help})


# Read by pydantic when it validates a loaded config: a key that is not a field is an error.
SECTION = ConfigDict(extra="forbid")


def require_positive(name: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"{name}: must be >= 1, got {value}")


def require_non_negative(name: str, value: float) -> None:
    if value < 0:
        raise ConfigError(f"{name}: must be >= 0, got {value}")
