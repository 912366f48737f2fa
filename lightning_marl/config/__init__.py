"""The config of a training job: its typed schema (:mod:`.schema`), the one validation at the edge
(:mod:`.validate`), older saved configs (:mod:`.migrate`), and composing it the way
``python train.py <overrides>`` does (:func:`compose`)."""
from __future__ import annotations

from typing import Any, Iterable, Sequence

from omegaconf import DictConfig

from lightning_marl.config.schema import TrainConfig, plain
from lightning_marl.config.validate import to_typed

CONFIG_MODULE = "lightning_marl.configs"


def compose(overrides: Sequence[str] = (), with_hydra: bool = False) -> DictConfig:
    """The composed (not yet validated) config that ``python train.py <overrides>`` would see
    (``with_hydra``: with Hydra's own node, ``hydra``: run folder, logging)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    from lightning_marl.registry import ENVS, MIXERS

    ENVS.load(), MIXERS.load()  # their options are config groups
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=with_hydra)


def validate(cfg: DictConfig, overrides: Iterable[tuple[str, Any]] = (), env_checks: bool = True) -> TrainConfig:
    """Check a composed config; returns it typed and frozen, or raises
    :class:`~lightning_marl.errors.ConfigError` (``env_checks=False``: without the checks that need
    the env's package installed)."""
    return to_typed(cfg, overrides, env_checks)


def load(overrides: Sequence[str] = ()) -> TrainConfig:
    """Compose and validate: the typed config of ``python train.py <overrides>``.

    >>> from lightning_marl.config import load
    >>> cfg = load(["env=matrix", "mixer=qmix", "seed=3"])
    >>> cfg.mixer.name, cfg.mixer.embed_dim, cfg.seed, cfg.total_env_steps
    ('qmix', 32, 3, 10000)
    """
    return validate(compose(overrides))


__all__ = ["CONFIG_MODULE", "TrainConfig", "compose", "load", "plain", "validate"]
