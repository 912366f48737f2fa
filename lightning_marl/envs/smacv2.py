"""SMACv2 (and the SMAC v1 maps it ships) behind the TorchRL contract of :mod:`.contract`.

Needs the ``smacv2`` package *and* the StarCraft II game with the SMAC maps; it is offered for
users who have the game (see docs/smac.md)::

    pip install git+https://github.com/oxwhirl/smacv2.git
    # StarCraft II 4.10 (Linux), the version the SMAC/SMACv2 baselines use:
    wget http://blzdistsc2-a.akamaihd.net/Linux/SC2.4.10.zip
    unzip -P iagreetotheeula SC2.4.10.zip -d ~            # -> ~/StarCraftII
    export SC2PATH=~/StarCraftII
    # the SMAC maps (SMACv2's release "maps": SMAC_Maps.zip) into $SC2PATH/Maps/SMAC_Maps/
    wget https://github.com/oxwhirl/smacv2/releases/download/maps/SMAC_Maps.zip
    unzip SMAC_Maps.zip -d $SC2PATH/Maps/

The game is driven through TorchRL's wrapper (``torchrl.envs.libs.smacv2.SMACv2Env``, which
builds ``StarCraft2Env`` or, with a capability config, ``StarCraftCapabilityEnvWrapper``);
:class:`SMACv2ContractEnv` re-keys its output to the contract:

==============================  ==========================================================
TorchRL's SMACv2 key            contract key
==============================  ==========================================================
``("agents","observation")``    ``("agents","observation")`` ``[N, obs_dim]``
``("agents","action_mask")``    ``("agents","action_mask")`` ``[N, A]`` bool
``("agents","action")``         ``("agents","action")`` ``[N]`` int64 (categorical)
``"state"``                     ``"state"`` ``[state_dim]``
``"reward"``                    ``"reward"`` ``[1]`` (SMAC's, scaled so a win returns ~20)
``("info","battle_won")`` []    ``"battle_won"`` ``[1]`` float (0 at reset)
``"done"`` = ``"terminated"``   ``"terminated"`` = game over (a side wiped out) only;
                                ``"truncated"`` = the map's time limit was reached
``("info","episode_limit")``    (SMAC reports a time-out as ``terminated``; its
                                ``info["episode_limit"]`` flag, which StarCraft2Env only
                                sets with ``continuing_episode=True`` -- that option
                                changes nothing else -- tells the two apart)
==============================  ==========================================================
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import importlib
import importlib.util
import os
import platform
from typing import Any, Dict, Optional, Union

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.envs import ParallelEnv, SerialEnv
from torchrl.envs.libs.smacv2 import SMACv2Env

from lightning_marl.config.schema import spec
from lightning_marl.envs.base import EnvConfig
from lightning_marl.envs.batching import GameBatch, available_cpus
from lightning_marl.envs.contract import ACTION, MASK, OBS, STATE, make_specs, reset_flags
from lightning_marl.errors import ConfigError
from lightning_marl.registry import ENVS

STAT_KEYS = ("battle_won",)

GAME_HINT = (
    "Install StarCraft II (Linux: version 4.10, as the SMAC/SMACv2 baselines) and point SC2PATH at it:\n"
    "    wget http://blzdistsc2-a.akamaihd.net/Linux/SC2.4.10.zip\n"
    "    unzip -P iagreetotheeula SC2.4.10.zip -d ~ && export SC2PATH=~/StarCraftII\n"
    "(Windows/macOS: the Battle.net client). Without the game, use env=smaclite."
)
MAPS_HINT = (
    "Put the SMAC maps into $SC2PATH/Maps/SMAC_Maps/:\n"
    "    wget https://github.com/oxwhirl/smacv2/releases/download/maps/SMAC_Maps.zip\n"
    "    unzip SMAC_Maps.zip -d $SC2PATH/Maps/"
)

PACKAGE_HINT = (
    "env=smacv2 needs the smacv2 package and the StarCraft II game (SC2PATH) with the SMAC maps:\n"
    "    pip install git+https://github.com/oxwhirl/smacv2.git\n" + GAME_HINT + "\n" + MAPS_HINT
    + "\n(docs/smac.md has the details.)"
)

# SMACv2's example configs (smacv2/examples/configs/sc2_gen_<race>.yaml): unit types and weights.
GEN_TEAMS = {
    "protoss": {"unit_types": ["stalker", "zealot", "colossus"], "weights": [0.45, 0.45, 0.1]},
    "terran": {"unit_types": ["marine", "marauder", "medivac"], "weights": [0.45, 0.45, 0.1],
               "exception_unit_types": ["medivac"]},
    "zerg": {"unit_types": ["zergling", "baneling", "hydralisk"], "weights": [0.45, 0.1, 0.45],
             "exception_unit_types": ["baneling"]},
}
# Their env_args that differ from StarCraft2Env's defaults (for the procedurally generated maps).
GEN_ENV_ARGS = {"obs_own_pos": True, "use_unit_ranges": True, "conic_fov": False, "min_attack_range": 2}


# ----------------------------------------------------------------------------- installation checks

def check_package() -> None:
    """ImportError with install instructions unless ``smacv2`` is importable."""
    if importlib.util.find_spec("smacv2") is None:
        raise ImportError(f"the smacv2 package is not installed.\n{PACKAGE_HINT}")
    try:
        importlib.import_module("smacv2.env")
    except ImportError as err:
        raise ImportError(f"the smacv2 package failed to import ({err}).\n{PACKAGE_HINT}") from err


def sc2_path() -> str:
    """Where pysc2 looks for StarCraft II: ``$SC2PATH`` or the platform's default."""
    default = {"Darwin": "/Applications/StarCraft II",
               "Windows": "C:/Program Files (x86)/StarCraft II"}.get(platform.system(), "~/StarCraftII")
    return os.path.expanduser(os.environ.get("SC2PATH", default))


def map_params(map_name: str) -> dict:
    from smacv2.env.starcraft2.maps import smac_maps

    registry = smac_maps.get_smac_map_registry()
    if map_name not in registry:
        raise ConfigError(f"env.map={map_name!r} is not a SMACv2 map; allowed: {', '.join(registry)}")
    return registry[map_name]


def check_game(map_name: str) -> None:
    """FileNotFoundError with instructions unless StarCraft II and the map file are where pysc2 looks."""
    root = sc2_path()
    if not os.path.isdir(os.path.join(root, "Versions")):
        where = (f"SC2PATH={os.environ['SC2PATH']!r}" if "SC2PATH" in os.environ
                 else f"the default {root!r} (SC2PATH unset)")
        raise FileNotFoundError(f"StarCraft II was not found at {where}: no 'Versions' folder there.\n{GAME_HINT}")
    file = map_params(map_name).get("map_name", map_name)
    path = os.path.join(root, "Maps", "SMAC_Maps", f"{file}.SC2Map")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"the map file of env.map={map_name!r} is missing: {path}\n{MAPS_HINT}")


# ----------------------------------------------------------------------------- config helpers

def check_config(map, n_units, n_enemies, capability_config, env_args) -> None:
    """The package is installed, the map exists, its capability config fits, and the game is there."""
    check_package()
    map_params(map)
    capability_for(map, capability_config, n_units, n_enemies)
    check_game(map)


def capability_for(map_name: str, capability_config: Optional[dict], n_units: int, n_enemies: int) -> Optional[dict]:
    """The capability config of a ``10gen_<race>`` map: the given one, or SMACv2's example one for
    the race with ``n_units`` vs ``n_enemies``; None for the SMAC v1 maps."""
    if not map_name.startswith("10gen_"):
        if capability_config is not None:
            raise ConfigError(f"env.capability_config is set for env.map={map_name!r}; allowed: null "
                              "(capability configs are for the procedurally generated 10gen_<race> maps)")
        return None
    if capability_config is not None:
        return copy.deepcopy(dict(capability_config))
    race = map_name[len("10gen_"):]
    if race not in GEN_TEAMS:
        raise ConfigError(f"env.map={map_name!r}: no default capability config for race {race!r}; "
                          f"allowed: {', '.join('10gen_' + r for r in GEN_TEAMS)}, or set env.capability_config")
    return {
        "n_units": n_units,
        "n_enemies": n_enemies,
        "team_gen": {"dist_type": "weighted_teams", "observe": True, **copy.deepcopy(GEN_TEAMS[race])},
        "start_positions": {"dist_type": "surrounded_and_reflect", "p": 0.5, "n_enemies": n_enemies,
                            "map_x": 32, "map_y": 32},
    }


def env_args_for(map_name: str, env_args: Optional[dict]) -> dict:
    """StarCraft2Env keyword arguments: SMACv2's example ones for the 10gen maps, overridden by ``env_args``."""
    args = dict(GEN_ENV_ARGS) if map_name.startswith("10gen_") else {}
    args.update(dict(env_args or {}))
    args["continuing_episode"] = True  # only adds info["episode_limit"] on time-outs: truncation
    return args


def contract_outcome(terminated: bool, info: dict) -> tuple[bool, bool, float]:
    """SMAC's ``(terminated, info)`` -> the contract's ``(terminated, truncated, battle_won)``:
    a time-out (``info["episode_limit"]``) is a truncation, not a terminal."""
    timeout = bool(info.get("episode_limit", False))
    ended = bool(terminated)
    return ended and not timeout, ended and timeout, float(bool(info.get("battle_won", False)))


# ----------------------------------------------------------------------------- the env

class SMACv2ContractEnv(SMACv2Env):
    """TorchRL's SMACv2 env (one game, batch size ``[]``) re-keyed to the contract."""

    def _make_specs(self, env) -> None:
        self.group_map = {"agents": [str(i) for i in range(env.n_agents)]}
        make_specs(self, n_agents=int(env.n_agents), n_actions=int(env.n_actions), obs_dim=int(env.get_obs_size()),
                   state_dim=int(env.get_state_size()), stat_keys=STAT_KEYS)
        self._finished = True

    @property
    def stat_keys(self) -> tuple[str, ...]:
        return STAT_KEYS

    def _observe(self) -> dict:
        dev = self.device
        mask = self._update_action_mask()  # also sets the action spec's mask
        obs = torch.as_tensor(np.asarray(self._env.get_obs(), dtype=np.float32), device=dev)
        state = torch.as_tensor(np.asarray(self._env.get_state(), dtype=np.float32), device=dev)
        agents = TensorDict({OBS[1]: obs, MASK[1]: mask}, batch_size=[int(self._env.n_agents)], device=dev)
        return {OBS[0]: agents, STATE: state}

    def _reset(self, tensordict: Optional[TensorDictBase] = None, **kwargs) -> TensorDict:
        self._env.reset()  # the capability wrapper may return None (it retries internally): read back
        self._finished = False
        out = self._observe()
        out.update({"battle_won": torch.zeros(1, device=self.device), **reset_flags((1,), self.device)})
        return TensorDict(out, batch_size=self.batch_size, device=self.device)

    def _step(self, tensordict: TensorDictBase) -> TensorDict:
        if self._finished:
            raise RuntimeError("SMACv2: step() on a finished game; reset it first")
        actions = [int(a) for a in tensordict.get(ACTION).reshape(-1).tolist()]
        reward, terminated, info = self._env.step(actions)
        terminated, truncated, won = contract_outcome(terminated, info)
        self._finished = terminated or truncated
        out = self._observe()
        dev = self.device
        out.update({
            "reward": torch.tensor([float(reward)], dtype=torch.float32, device=dev),
            "battle_won": torch.tensor([won], dtype=torch.float32, device=dev),
            "done": torch.tensor([self._finished], device=dev),
            "terminated": torch.tensor([terminated], device=dev),
            "truncated": torch.tensor([truncated], device=dev),
        })
        return TensorDict(out, batch_size=self.batch_size, device=dev)


# ----------------------------------------------------------------------------- factory

# The game's randomness lives in StarCraft II and cannot be saved: GameBatch's empty RNG state, so a
# resumed SMACv2 run is not bit-exact.
class SMACv2ParallelEnv(GameBatch, ParallelEnv):
    """A ``ParallelEnv`` of SMACv2 games (one worker process and one StarCraft II each)."""


class SMACv2SerialEnv(GameBatch, SerialEnv):
    """A ``SerialEnv`` of SMACv2 games."""


def _make_game(map_name: str, capability_config: Optional[dict], env_args: dict, seed: int,
               device: str) -> SMACv2ContractEnv:
    return SMACv2ContractEnv(map_name=map_name, capability_config=copy.deepcopy(capability_config), seed=seed,
                             categorical_actions=True, device=device, **env_args)


def make_env(num_envs: int, seed: int, device: str, *, map: str, capability_config: Optional[dict], n_units: int,
             n_enemies: int, env_args: Optional[dict], parallel: Union[bool, str],
             start_method: Optional[str]) -> Union[ParallelEnv, SerialEnv]:
    """``num_envs`` SMACv2 games (game ``i`` seeded ``seed + i``; one StarCraft II process each)
    batched to ``[num_envs]``: a ``ParallelEnv`` when ``parallel`` and ``num_envs > 1``, else a
    ``SerialEnv``.

    ``map``: ``10gen_protoss`` | ``10gen_terran`` | ``10gen_zerg`` (procedurally generated; the
    capability config defaults to SMACv2's example for the race with ``n_units`` vs
    ``n_enemies``) or a SMAC v1 map (``3s5z``, ``MMM2``, ...; no capability config).
    ``env_args``: further ``StarCraft2Env`` keyword arguments. A probe game in this process reads
    the sizes, then closes. The batch exposes ``n_agents``, ``n_actions``, ``episode_limit``,
    ``stat_keys``, ``obs_dim``, ``state_dim`` and ``map``.
    """
    assert parallel in (True, False, "auto"), parallel
    if parallel == "auto":  # one StarCraft II process per game, when there are cores for them
        parallel = available_cpus() >= num_envs
    check_package()
    map_params(map)  # ConfigError on an unknown map
    check_game(map)
    capability = capability_for(map, capability_config, n_units, n_enemies)
    args = env_args_for(map, env_args)
    probe = _make_game(map, capability, args, seed, str(device))
    info = {"n_agents": int(probe.n_agents), "n_actions": int(probe.n_actions),
            "episode_limit": int(probe.episode_limit), "stat_keys": STAT_KEYS,
            "obs_dim": int(probe.observation_spec[OBS].shape[-1]),
            "state_dim": int(probe.observation_spec[STATE].shape[-1]), "map": map}
    probe.close()
    factories = [functools.partial(_make_game, map, capability, args, seed + i, str(device)) for i in range(num_envs)]
    if parallel and num_envs > 1:
        env = SMACv2ParallelEnv(num_envs, factories, device=device, mp_start_method=start_method, use_buffers=False)
    else:
        env = SMACv2SerialEnv(num_envs, factories, device=device)
    for name, value in info.items():
        setattr(env, name, value)
    return env


@ENVS.register
@dataclasses.dataclass
class SMACv2EnvConfig(EnvConfig):
    """SMACv2 through TorchRL's wrapper; needs StarCraft II (lightning_marl/envs/smacv2.py)."""

    builds = staticmethod(make_env)
    worker_processes = True
    name: str = "smacv2"
    map: str = spec("10gen_protoss", "10gen_protoss | 10gen_terran | 10gen_zerg, or a SMAC v1 map")
    n_units: int = spec(5, "allies of the default capability config", ge=1)
    n_enemies: int = spec(5, "enemies of the default capability config", ge=1)
    capability_config: Optional[Dict[str, Any]] = spec(None, "null: SMACv2's example config for the race")
    env_args: Optional[Dict[str, Any]] = spec(None, "extra StarCraft2Env keyword arguments")

    def check(self) -> None:
        check_config(**self.options())

