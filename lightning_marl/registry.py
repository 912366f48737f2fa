"""Name -> implementation registries, imported lazily so optional dependencies stay optional."""
from __future__ import annotations

import importlib
from typing import Any


class ConfigError(ValueError):
    """A configuration value is not allowed; the message names it and what is allowed."""


class Registry:
    """Maps config names to ``"module:attribute"`` targets, imported on first use."""

    def __init__(self, kind: str, entries: dict[str, str]):
        self.kind = kind
        self._entries = dict(entries)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str) -> Any:
        if name not in self._entries:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; allowed: {', '.join(self.names())}"
            )
        module, attr = self._entries[name].split(":")
        return getattr(importlib.import_module(module), attr)


def check(condition: bool, name: str, value: Any, allowed: str) -> None:
    """Raise a ConfigError naming ``name=value`` and what is allowed unless ``condition``."""
    if not condition:
        raise ConfigError(f"{name}={value!r} is out of range; allowed: {allowed}")
