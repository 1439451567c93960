"""Errors split by whose fault they are (see docs/design.md)."""

from __future__ import annotations


class DecodeError(ValueError):
    """Bytes from the kernel or the network that cannot be decoded."""


class ConfigError(Exception):
    """The user's configuration is wrong. Carries file and line where known."""

    def __init__(self, reason: str, file: str | None = None, line: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.file = file
        self.line = line

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = f"{self.file}:{self.line}: " if self.line is not None else f"{self.file}: "
        return where + self.reason


class PluginError(Exception):
    """A run-time failure of a plugin (a file that cannot be opened, a socket that fails)."""
