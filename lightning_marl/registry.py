"""One registry per extension point: ``ENVS`` (environment families) and ``MIXERS``.

An entry is a config dataclass registered under its ``name``; the config names the class it builds
(its ``builds`` class attribute, BenchMARL's ``associated_class`` idea) and states what the trainer
needs to know about it as capability flags (class attributes of the base configs in
:mod:`lightning_marl.envs.base` and :mod:`lightning_marl.models.mixers.base`), so that nothing
outside the entry's own file tests for a name. Registering also puts the config into Hydra's
ConfigStore as the option ``env=<name>`` / ``mixer=<name>``.

A new entry is one file: a module in ``lightning_marl/envs/`` or ``lightning_marl/models/mixers/``
whose config is decorated with ``@ENVS.register`` / ``@MIXERS.register``. The registry imports every
module of its package the first time it is asked for its entries, so a new file is found without
being listed anywhere; a module outside the package registers when it is imported
(docs/extending.md).
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import TypeVar

from hydra.core.config_store import ConfigStore

from lightning_marl.errors import ConfigError

C = TypeVar("C", bound=type)


class Registry:
    """Config name -> config dataclass, for the config group ``group``; built-ins are the modules of
    ``package``, imported on first use (their third-party packages are imported only when a game or
    a check needs them, so optional dependencies stay optional)."""

    def __init__(self, group: str, package: str):
        self.group, self.package = group, package
        self._configs: dict[str, type] = {}
        self._loaded = False

    def register(self, config: C) -> C:
        """Class decorator: register the config dataclass ``config`` under its ``name`` default."""
        if not dataclasses.is_dataclass(config):
            raise TypeError(f"{config.__name__}: register a config dataclass (with a name and the class it builds)")
        name = next((f.default for f in dataclasses.fields(config) if f.name == "name"), None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"{config.__name__}: its name field needs a default, the {self.group} option's name")
        known = self._configs.get(name)
        if known is not None and (known.__module__, known.__qualname__) != (config.__module__, config.__qualname__):
            raise ValueError(f"{self.group}={name} is registered twice: {known.__module__}.{known.__qualname__} "
                             f"and {config.__module__}.{config.__qualname__}")
        self._configs[name] = config
        ConfigStore.instance().store(group=self.group, name=name, node=config)
        return config

    def unregister(self, name: str) -> None:
        """Forget the entry ``name`` (e.g. an example module registered for a test, or a notebook cell
        that is run again with another class under the same name after this)."""
        self._configs.pop(name, None)
        ConfigStore.instance().repo.get(self.group, {}).pop(f"{name}.yaml", None)

    def load(self) -> "Registry":
        """Import every module of the built-in package once (each registers its entries)."""
        if not self._loaded:
            self._loaded = True
            root = importlib.import_module(self.package)
            for module in pkgutil.iter_modules(root.__path__):
                importlib.import_module(f"{self.package}.{module.name}")
        return self

    def names(self) -> list[str]:
        return sorted(self.load()._configs)

    def __contains__(self, name: object) -> bool:
        return name in self.load()._configs

    def config(self, name: str) -> type:
        """The config dataclass registered as ``name`` (an unknown name is refused with the list)."""
        if name not in self:
            raise ConfigError(f"{self.group}={name} is not an option; allowed: {', '.join(self.names())}")
        return self._configs[name]


ENVS = Registry("env", "lightning_marl.envs")
MIXERS = Registry("mixer", "lightning_marl.models.mixers")

__all__ = ["ENVS", "MIXERS", "Registry"]
