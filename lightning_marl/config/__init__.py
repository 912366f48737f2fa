"""The config: its typed schema (:mod:`.schema`), the checks (:mod:`.validate`), older saved configs
(:mod:`.migrate`), and composing it the way ``python train.py <overrides>`` does (:func:`compose`)."""
from __future__ import annotations

from typing import Any, Iterable, Sequence

from omegaconf import DictConfig

from lightning_marl.config import schema  # noqa: F401  (registers the schema in Hydra's ConfigStore)
from lightning_marl.config.schema import TrainConfig
from lightning_marl.config.validate import to_typed

CONFIG_MODULE = "lightning_marl.configs"


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """The training config that ``python train.py <overrides>`` would see (for scripts and tests)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def plain(node: Any) -> Any:
    """A schema object as plain containers (enums as their names), e.g. for hyperparameters."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.structured(node), enum_to_str=True)


def validate(cfg: DictConfig, overrides: Iterable[tuple[str, Any]] = (), env_checks: bool = True) -> TrainConfig:
    """Check a composed config; returns it typed, or raises :class:`~lightning_marl.errors.ConfigError`
    (``env_checks=False``: without the checks that need the env's package installed)."""
    return to_typed(cfg, overrides, env_checks)


__all__ = ["CONFIG_MODULE", "TrainConfig", "compose", "plain", "validate"]
