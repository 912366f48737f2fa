"""Gymnasium multi-agent games with tuple spaces (EPyMARL's "gymma" family): Level-Based Foraging
(``lbforaging`` 2.0.0, ``env=lbf``) and the multi-robot warehouse (``rware`` 2.0.0, ``env=rware``),
chosen by their Gymnasium key (``env.key=Foraging-8x8-2p-2f-coop-v3``, ``env.key=rware-tiny-2ag-v2``).

One :class:`GymmaEnv` is one game (batch size ``[]``); :func:`make_env` batches ``num_envs`` of them
(game ``i`` seeded ``seed + i``) in this process or in worker processes (``data.env_workers``):

- observations: each agent's own (``[N, obs]``); the state: the agents' observations joined, as
  EPyMARL builds it for this family (neither game has a global state of its own);
- the team reward: the sum of the agents' rewards (EPyMARL's common reward);
- action masks: LBF's valid actions of each player (moving into a wall or a food cell is not one,
  loading only beside food), or with ``env.valid_actions=false`` every action, as EPyMARL's gymma
  wrapper offers them (LBF turns an invalid action into doing nothing); RWARE has none, every action
  is available;
- the time limit (LBF's ``max_episode_steps`` 50, RWARE's ``max_steps`` 500): both games report it
  as done; here it is a truncation, which bootstraps, unless the game also ended on its own at that
  step (LBF: every food item collected). ``env.timeout_as_terminal=true`` stores time-outs as
  terminals, as EPyMARL does, for parity with it.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
from typing import Optional, Union

import numpy as np
import torch
from torchrl.envs import EnvBase, ParallelEnv

from lightning_marl.config.schema import spec
from lightning_marl.envs.base import EnvConfig
from lightning_marl.envs.batching import LoopedGames, SeededGame, SeededGameBatch, batch_games
from lightning_marl.envs.contract import make_specs
from lightning_marl.errors import ConfigError
from lightning_marl.registry import ENVS

# family -> (the package that registers its games, the keys' prefix, the install line)
FAMILIES = {"lbf": ("lbforaging", "Foraging", "pip install 'lightning_marl[lbf]'"),
            "rware": ("rware", "rware", "pip install 'lightning_marl[rware]'")}


def _gymnasium(family: str):
    package, _, install = FAMILIES[family]
    try:
        import gymnasium

        __import__(package)  # registers its games with Gymnasium
    except ImportError as err:
        raise ImportError(f"env={family} needs the {package} package ({err}).\n    {install}") from err
    return gymnasium


def registered_keys(family: str) -> list[str]:
    """The Gymnasium keys the family's package registers (e.g. every ``Foraging-...-v3``)."""
    prefix = FAMILIES[family][1]
    return sorted(k for k in _gymnasium(family).registry if k.startswith(prefix))


def check_key(family: str, key: str) -> None:
    keys = registered_keys(family)
    if key not in keys:
        close = difflib.get_close_matches(key, keys, n=5, cutoff=0.6) or keys[:5]
        raise ConfigError(f"env.key={key} is not a registered {family} game; allowed: one of the {len(keys)} "
                          f"keys {FAMILIES[family][0]} registers, e.g. {', '.join(close)}")


def _terminal(family: str, game) -> bool:
    """Whether a game that reports done ended on its own (not by its time limit)."""
    return family == "lbf" and int(game.field.sum()) == 0  # every food item collected


def _episode_limit(family: str, game) -> int:
    return int(game._max_episode_steps if family == "lbf" else game.max_steps)


def _valid_actions(family: str, game, n_agents: int, n_actions: int, valid_only: bool) -> np.ndarray:
    if family != "lbf" or not valid_only:
        return np.ones((n_agents, n_actions), dtype=bool)
    mask = np.zeros((n_agents, n_actions), dtype=bool)
    for i, player in enumerate(game.players):
        mask[i, [a.value for a in game._valid_actions[player]]] = True
    return mask


class GymmaEnv(SeededGame, EnvBase):
    """One game of a Gymnasium multi-agent family (batch size ``[]``); see the module docstring."""

    batch_locked = True

    def __init__(self, family: str, key: str, seed: Optional[int], device: Union[str, torch.device],
                 game_index: int, valid_actions: bool):
        gymnasium = _gymnasium(family)
        check_key(family, key)
        super().__init__(batch_size=torch.Size([]), device=device)
        self._game = gymnasium.make(key, disable_env_checker=True).unwrapped  # we call reset/step in order
        self.family, self.key, self.valid_actions = family, key, valid_actions
        self.n_agents = len(self._game.action_space)
        self.n_actions = int(self._game.action_space[0].n)
        self.obs_dim = int(self._game.observation_space[0].shape[0])
        self.state_dim = self.n_agents * self.obs_dim
        self.episode_limit = _episode_limit(family, self._game)
        self.stat_keys: tuple[str, ...] = ()
        make_specs(self, n_agents=self.n_agents, n_actions=self.n_actions, obs_dim=self.obs_dim,
                   state_dim=self.state_dim)
        self._t, self._finished, self._seed, self.game_index = 0, True, seed, game_index

    @property
    def label(self) -> str:
        return self.key

    def _arrays(self, obs) -> tuple:
        joined = np.stack(obs).astype(np.float32, copy=False)
        mask = _valid_actions(self.family, self._game, self.n_agents, self.n_actions, self.valid_actions)
        return joined, mask, joined.reshape(-1)

    def _advance(self, actions: list) -> tuple:
        obs, rewards, done, truncated, _ = self._game.step(tuple(int(a) for a in actions))
        ended = bool(done) or bool(truncated) or self._t >= self.episode_limit
        terminated = ended and (self._t < self.episode_limit or _terminal(self.family, self._game))
        return obs, float(np.sum(rewards)), terminated, ended and not terminated

    def _rng(self):
        return self._game.np_random


class GymmaParallelEnv(SeededGameBatch, ParallelEnv):
    """Games of a Gymnasium multi-agent family, one worker process each."""


class GymmaLoopedGames(LoopedGames):
    """Games of a Gymnasium multi-agent family, stepped in turn in this process."""


def _make_game(family: str, key: str, seed: int, device: str, game_index: int, valid_actions: bool) -> GymmaEnv:
    return GymmaEnv(family, key, seed, device, game_index, valid_actions)


def make_games(family: str, num_envs: int, seed: int, device: str, key: str, parallel: Union[bool, str],
               start_method: Optional[str], valid_actions: bool) -> Union[ParallelEnv, LoopedGames]:
    """``num_envs`` games of ``key`` batched to ``[num_envs]`` (worker processes when ``parallel`` and
    there are cores for them; see :func:`~lightning_marl.envs.batching.batch_games`)."""
    probe = GymmaEnv(family, key, seed, device, 0, valid_actions)  # checks the key here, not in a worker
    probe.close()
    factories = [functools.partial(_make_game, family, key, seed + i, str(device), i, valid_actions)
                 for i in range(num_envs)]
    env = batch_games(factories, probe, ("n_agents", "n_actions", "episode_limit", "stat_keys", "obs_dim",
                                         "state_dim", "key"),
                      parallel=parallel, device=device, parallel_cls=GymmaParallelEnv, serial_cls=GymmaLoopedGames,
                      start_method=start_method, use_buffers=False)
    env.start()  # build the games now: errors surface here, and rng_state() works before any rollout
    return env


def make_lbf(num_envs: int, seed: int, device: str, *, key: str, valid_actions: bool, parallel: Union[bool, str],
             start_method: Optional[str]) -> Union[ParallelEnv, LoopedGames]:
    return make_games("lbf", num_envs, seed, device, key, parallel, start_method, valid_actions)


def make_rware(num_envs: int, seed: int, device: str, *, key: str, parallel: Union[bool, str],
               start_method: Optional[str]) -> Union[ParallelEnv, LoopedGames]:
    return make_games("rware", num_envs, seed, device, key, parallel, start_method, valid_actions=True)


@ENVS.register
@dataclasses.dataclass
class LBFConfig(EnvConfig):
    """Level-Based Foraging (lbforaging 2.0.0), a game chosen by its Gymnasium key."""

    builds = staticmethod(make_lbf)
    worker_processes = True
    name: str = "lbf"
    key: str = spec("Foraging-8x8-2p-2f-coop-v3", "a key lbforaging registers, e.g. Foraging-8x8-2p-3f-v3")
    valid_actions: bool = spec(True, "true: LBF's valid actions of each player as its action mask; false: every "
                                     "action available, as EPyMARL's gymma wrapper (an invalid one does nothing)")

    def check(self) -> None:
        check_key("lbf", self.key)


@ENVS.register
@dataclasses.dataclass
class RWAREConfig(EnvConfig):
    """The multi-robot warehouse (rware 2.0.0), a game chosen by its Gymnasium key."""

    builds = staticmethod(make_rware)
    worker_processes = True
    name: str = "rware"
    key: str = spec("rware-tiny-2ag-v2", "a key rware registers, e.g. rware-tiny-4ag-v2")

    def check(self) -> None:
        check_key("rware", self.key)
