"""The multi-agent particle environments (``mpe2``, PettingZoo parallel API) with discrete actions,
as EPyMARL and BenchMARL run them: ``env=mpe env.task=simple_spread`` (also ``simple_reference``,
``simple_speaker_listener``).

One :class:`MPEEnv` is one game (batch size ``[]``); :func:`make_env` batches ``num_envs`` of them
(game ``i`` seeded ``seed + i``) in this process or in worker processes (``data.env_workers``):

- observations: each agent's own, zero-padded to the longest (the speaker of
  ``simple_speaker_listener`` sees 3 values, the listener 11);
- actions: ``max_i A_i`` per agent, those an agent does not have masked out (the speaker has 3, the
  listener 5); every action an agent has is always available;
- the state: the environment's own ``state()`` (the agents' observations joined, in mpe2);
- the team reward: the sum of the agents' rewards (EPyMARL's common reward);
- the time limit (``max_cycles``, 25 steps by default) is a truncation, which bootstraps.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
from typing import Optional, Union

import numpy as np
import torch
from torchrl.envs import EnvBase, ParallelEnv

from lightning_marl.config.schema import spec
from lightning_marl.envs.base import EnvConfig
from lightning_marl.envs.batching import LoopedGames, SeededGame, SeededGameBatch, batch_games
from lightning_marl.envs.contract import ACTION, make_specs
from lightning_marl.errors import ConfigError
from lightning_marl.registry import ENVS

# task -> the mpe2 module that builds it
TASKS = {"simple_spread": "mpe2.simple_spread_v3", "simple_reference": "mpe2.simple_reference_v3",
         "simple_speaker_listener": "mpe2.simple_speaker_listener_v4"}
INSTALL = "pip install 'lightning_marl[mpe]'"


def _parallel_env(task: str, max_cycles: int):
    if task not in TASKS:
        raise ConfigError(f"env.task={task} is not an MPE task; allowed: {', '.join(TASKS)}")
    try:
        module = importlib.import_module(TASKS[task])
    except ImportError as err:
        raise ImportError(f"env=mpe needs the mpe2 package ({err}).\n    {INSTALL}") from err
    return module.parallel_env(continuous_actions=False, max_cycles=max_cycles)


class MPEEnv(SeededGame, EnvBase):
    """One MPE game (batch size ``[]``); see the module docstring."""

    batch_locked = True
    masks_change = False  # every action an agent has is always available

    def __init__(self, task: str, max_cycles: int, seed: Optional[int], device: Union[str, torch.device],
                 game_index: int = 0):
        self._game = _parallel_env(task, max_cycles)
        super().__init__(batch_size=torch.Size([]), device=device)
        self.task, self.agent_names = task, list(self._game.possible_agents)
        self._actions = [int(self._game.action_space(a).n) for a in self.agent_names]
        self._obs_dims = [int(self._game.observation_space(a).shape[0]) for a in self.agent_names]
        self.n_agents, self.n_actions, self.obs_dim = len(self.agent_names), max(self._actions), max(self._obs_dims)
        self.state_dim = int(self._game.state_space.shape[0])
        self.episode_limit = max_cycles
        self.stat_keys: tuple[str, ...] = ()
        self._mask = np.asarray([[b < n for b in range(self.n_actions)] for n in self._actions])
        make_specs(self, n_agents=self.n_agents, n_actions=self.n_actions, obs_dim=self.obs_dim,
                   state_dim=self.state_dim)
        self.full_action_spec[ACTION].update_mask(torch.as_tensor(self._mask, device=self.device))
        self._t, self._finished, self._seed, self.game_index = 0, True, seed, game_index

    @property
    def label(self) -> str:
        return f"MPE {self.task}"

    def _arrays(self, obs: dict) -> tuple:
        padded = np.zeros((self.n_agents, self.obs_dim), dtype=np.float32)
        for i, name in enumerate(self.agent_names):
            padded[i, : self._obs_dims[i]] = obs[name]
        return padded, self._mask, np.asarray(self._game.state(), dtype=np.float32)

    def _advance(self, actions: list) -> tuple:
        obs, rewards, terminations, truncations, _ = self._game.step(
            {name: int(a) for name, a in zip(self.agent_names, actions)})
        terminated = any(terminations.values())
        truncated = not terminated and (any(truncations.values()) or self._t >= self.episode_limit)
        return obs, float(sum(rewards.values())), terminated, truncated

    def _rng(self):
        return self._game.unwrapped.np_random


class MPEParallelEnv(SeededGameBatch, ParallelEnv):
    """MPE games, one worker process each."""


class MPELoopedGames(LoopedGames):
    """MPE games, stepped in turn in this process."""


def _make_game(task: str, max_cycles: int, seed: int, device: str, game_index: int) -> MPEEnv:
    return MPEEnv(task, max_cycles, seed, device, game_index)


def make_env(num_envs: int, seed: int, device: str, *, task: str, max_cycles: int, parallel: Union[bool, str],
             start_method: Optional[str]) -> Union[ParallelEnv, LoopedGames]:
    """``num_envs`` games of ``task`` batched to ``[num_envs]`` (see
    :func:`~lightning_marl.envs.batching.batch_games`)."""
    probe = MPEEnv(task, max_cycles, seed, device)  # checks the task here, not in a worker
    probe.close()
    factories = [functools.partial(_make_game, task, max_cycles, seed + i, str(device), i) for i in range(num_envs)]
    env = batch_games(factories, probe, ("n_agents", "n_actions", "episode_limit", "stat_keys", "obs_dim",
                                         "state_dim", "task"),
                      parallel=parallel, device=device, parallel_cls=MPEParallelEnv, serial_cls=MPELoopedGames,
                      start_method=start_method, use_buffers=False)
    env.start()
    return env


@ENVS.register
@dataclasses.dataclass
class MPEConfig(EnvConfig):
    """The multi-agent particle environments (mpe2), discrete actions."""

    builds = staticmethod(make_env)
    worker_processes = True
    name: str = "mpe"
    task: str = spec("simple_spread", "simple_spread | simple_reference | simple_speaker_listener",
                     choices=tuple(TASKS))
    max_cycles: int = spec(25, "time limit in steps (truncation; mpe2's max_cycles)", ge=1)
