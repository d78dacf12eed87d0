"""The one error a user's input raises: its message is one line naming the field (or file) and the fix."""

from __future__ import annotations


class ConfigError(ValueError):
    """A user error in the configuration; its message is one line naming the field."""
