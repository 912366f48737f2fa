"""Name -> implementation registries, imported lazily so optional dependencies stay optional."""
from __future__ import annotations

import importlib
from typing import Any

from lightning_marl.errors import ConfigError

__all__ = ["ConfigError", "Registry", "check"]


class Registry:
    """Maps config names to ``"module:attribute"`` targets, imported on first use."""

    def __init__(self, kind: str, entries: dict[str, str]):
        self.kind = kind
        self._entries = dict(entries)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def target(self, name: str) -> tuple[str, str]:
        """(module, attribute) registered as ``name``."""
        if name not in self._entries:
            raise ConfigError(f"{self.kind}={name} is not an option; allowed: {', '.join(self.names())}")
        module, attr = self._entries[name].split(":")
        return module, attr

    def get(self, name: str) -> Any:
        module, attr = self.target(name)
        return getattr(importlib.import_module(module), attr)


def check(condition: bool, name: str, value: Any, allowed: str) -> None:
    """Raise a ConfigError naming ``name=value`` and what is allowed unless ``condition``."""
    if not condition:
        from lightning_marl.config.validate import show

        raise ConfigError(f"{name}={show(value)} is out of range; allowed: {allowed}")
