"""Environment families behind the TorchRL contract of :mod:`lightning_marl.envs.contract`.

Each family is one module with a ``make_env(num_envs, seed, device, **params)`` factory that
returns a TorchRL ``EnvBase`` with batch size ``[num_envs]``.
"""
from __future__ import annotations

from typing import Mapping

from lightning_marl.registry import Registry

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


def make_env(name: str, num_envs: int = 1, seed: int = 0, device: str = "cpu", **params):
    """Build ``num_envs`` environments of family ``name`` (see ``ENVS.names()``)."""
    return ENVS.get(name)(num_envs=num_envs, seed=seed, device=device, **params)


def env_options(env_cfg: Mapping) -> list[str]:
    """The options an env config sets (every key but ``name``), sorted: what an override may change."""
    return sorted(k for k in env_cfg if k != "name")


def in_process(env_cfg: dict) -> dict:
    """``env_cfg`` with the games stepped in this process (``parallel=False`` for the families that
    otherwise batch their games in worker processes)."""
    return {**env_cfg, "parallel": False} if "parallel" in env_cfg else dict(env_cfg)
