"""Environment families behind the TorchRL contract of :mod:`lightning_marl.envs.contract`.

Each family is one module: the game (a TorchRL ``EnvBase``), its factory, and its config dataclass
(a subclass of :class:`~lightning_marl.envs.base.EnvConfig`: the options, their defaults and what is
allowed, the factory it builds with, capability flags) registered with ``@ENVS.register``
(:mod:`lightning_marl.registry` finds every module of this package).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Union

from lightning_marl.config.schema import DataConfig, EnvWorkers, StartMethod, TrainConfig
from lightning_marl.envs.base import EnvConfig
from lightning_marl.registry import ENVS


def env_config(env: Union[EnvConfig, Mapping[str, Any]]) -> EnvConfig:
    """The typed env config of ``env`` (a config object, or a mapping with ``name`` and options);
    an unknown family, unknown options and values out of range are refused."""
    if isinstance(env, EnvConfig):
        return env
    from lightning_marl.config.validate import typed_options

    options = dict(env)
    name = options.pop("name", None)
    return typed_options(ENVS.config(name), "env.", name=name, **options)


def make_env(env: Union[EnvConfig, Mapping[str, Any], str], num_envs: int = 1, seed: int = TrainConfig.seed,
             device: str = TrainConfig.device, *, workers: EnvWorkers = DataConfig.env_workers,
             start_method: Optional[StartMethod] = DataConfig.start_method, **options):
    """Build ``num_envs`` games of ``env`` (a typed env config, a mapping with ``name``, or a family
    name with its options as keywords); seed, device, workers and start method default to the
    schema's. ``timeout_as_terminal`` is applied to the stored episodes by the data module, not here.

    >>> from lightning_marl.envs import make_env
    >>> games = make_env("box_pushing", num_envs=4, grid=6)
    >>> tuple(games.reset()["agents", "observation"].shape)
    (4, 2, 5)
    """
    if isinstance(env, str):
        env = {"name": env, **options}
    elif options:
        raise TypeError("pass env options inside the env config, not as keywords")
    if workers not in EnvWorkers._value2member_map_:
        from lightning_marl.errors import one_of, refuse

        raise refuse("data.env_workers", workers, one_of([m.value for m in EnvWorkers]))
    return env_config(env).make(num_envs, seed, device, EnvWorkers(workers), start_method)


__all__ = ["ENVS", "EnvConfig", "env_config", "make_env"]
