"""Environment families behind the TorchRL contract of :mod:`lightning_marl.envs.contract`.

Each family is one module with a ``make_env(num_envs, seed, device, **options)`` factory that
returns a TorchRL ``EnvBase`` with batch size ``[num_envs]``, and optionally a
``check_config(options)`` that refuses what the schema cannot express (a payoff table's shape, a
layout or map the installed package lacks). The options, their types and defaults are the env's
dataclass in :mod:`lightning_marl.config.schema`.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Mapping, Optional, Union

from lightning_marl.config.schema import ENV_SCHEMAS, WORKER_ENVS, EnvConfig, EnvWorkers, StartMethod
from lightning_marl.registry import ConfigError, Registry

ENVS = Registry(
    "env",
    {
        "matrix": "lightning_marl.envs.matrix:make_env",
        "box_pushing": "lightning_marl.envs.box_pushing:make_env",
        "overcooked": "lightning_marl.envs.overcooked:make_env",
        "smaclite": "lightning_marl.envs.smaclite:make_env",
        "smacv2": "lightning_marl.envs.smacv2:make_env",
    },
)

_PARALLEL = {EnvWorkers.auto: "auto", EnvWorkers.processes: True, EnvWorkers.in_process: False}


def env_config(env: Union[EnvConfig, Mapping[str, Any]]) -> EnvConfig:
    """The typed env config of ``env`` (a schema object, or a mapping with ``name`` and options);
    unknown options and values out of range are refused."""
    if isinstance(env, EnvConfig):
        return env
    options = dict(env)
    name = options.pop("name", None)
    if name not in ENV_SCHEMAS:
        raise ConfigError(f"env={name} is not an option; allowed: {', '.join(ENV_SCHEMAS)}")
    from lightning_marl.config.validate import typed_options

    return typed_options(ENV_SCHEMAS[name], "env.", name=name, **options)


def env_options(env: Union[EnvConfig, Mapping[str, Any]]) -> list[str]:
    """The options of the env family (every schema field but ``name``): what an override may change."""
    name = env.name if isinstance(env, EnvConfig) else env["name"]
    return [f.name for f in dataclasses.fields(ENV_SCHEMAS[name]) if f.name != "name"]


def _plain(value: Any) -> Any:
    return value.value if hasattr(value, "value") and not isinstance(value, (int, float)) else value


def check_config(env: EnvConfig) -> None:
    """The family's own checks (``check_config(**options)`` in its module), if it has them."""
    module = importlib.import_module(ENVS.target(env.name)[0])
    check = getattr(module, "check_config", None)
    if check is not None:
        check(**family_options(env))


def family_options(env: EnvConfig) -> dict[str, Any]:
    """The keyword arguments of the family's ``make_env`` (plain values, no ``name`` and no
    ``timeout_as_terminal``, which :func:`make_env` applies as a transform)."""
    return {f.name: _plain(getattr(env, f.name)) for f in dataclasses.fields(env)
            if f.name not in ("name", "timeout_as_terminal")}


def make_env(env: Union[EnvConfig, Mapping[str, Any], str], num_envs: int = 1, seed: int = 0, device: str = "cpu", *,
             workers: EnvWorkers = EnvWorkers.auto, start_method: Optional[StartMethod] = None, **options):
    """Build ``num_envs`` games of ``env`` (a typed env config, a mapping with ``name``, or a family
    name with its options as keywords). ``workers`` / ``start_method``: how the families of
    ``WORKER_ENVS`` batch their games (``data.env_workers``, ``data.start_method``).
    ``timeout_as_terminal`` is applied to the stored episodes by the data module, not here."""
    if isinstance(env, str):
        env = {"name": env, **options}
    elif options:
        raise TypeError("pass env options inside the env config, not as keywords")
    cfg = env_config(env)
    kwargs = family_options(cfg)
    if cfg.name in WORKER_ENVS:
        if workers not in EnvWorkers._value2member_map_:
            raise ConfigError(f"data.env_workers={workers} is out of range; allowed: "
                              f"{', '.join(m.value for m in EnvWorkers)}")
        kwargs.update(parallel=_PARALLEL[EnvWorkers(workers)], start_method=_plain(start_method))
    return ENVS.get(cfg.name)(num_envs=num_envs, seed=seed, device=device, **kwargs)
