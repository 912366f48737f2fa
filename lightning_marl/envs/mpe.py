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
from tensordict import TensorDict, TensorDictBase
from torchrl.envs import EnvBase, ParallelEnv, SerialEnv

from lightning_marl.config.schema import spec
from lightning_marl.envs.base import EnvConfig
from lightning_marl.envs.batching import SeededGame, SeededGameBatch, batch_games
from lightning_marl.envs.contract import ACTION, MASK, OBS, STATE, make_specs
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
        self._mask = torch.tensor([[b < n for b in range(self.n_actions)] for n in self._actions], device=self.device)
        make_specs(self, n_agents=self.n_agents, n_actions=self.n_actions, obs_dim=self.obs_dim,
                   state_dim=self.state_dim)
        self.full_action_spec[ACTION].update_mask(self._mask.clone())
        self._t, self._finished, self._seed, self.game_index = 0, True, seed, game_index

    def _observe(self, obs: dict) -> dict:
        dev = self.device
        padded = np.zeros((self.n_agents, self.obs_dim), dtype=np.float32)
        for i, name in enumerate(self.agent_names):
            padded[i, : self._obs_dims[i]] = obs[name]
        agents = TensorDict({OBS[1]: torch.as_tensor(padded, device=dev), MASK[1]: self._mask.clone()},
                            batch_size=[self.n_agents], device=dev)
        return {OBS[0]: agents, STATE: torch.as_tensor(self._game.state(), dtype=torch.float32, device=dev)}

    def _step(self, tensordict: TensorDictBase) -> TensorDict:
        if self._finished:
            raise RuntimeError(f"MPE {self.task}: step() on a finished game (t={self._t}); reset it first")
        chosen = tensordict.get(ACTION).reshape(-1).tolist()
        obs, rewards, terminations, truncations, _ = self._game.step(
            {name: int(a) for name, a in zip(self.agent_names, chosen)})
        self._t += 1
        terminated = any(terminations.values())
        truncated = not terminated and (any(truncations.values()) or self._t >= self.episode_limit)
        self._finished = terminated or truncated
        out = self._observe(obs)
        dev = self.device
        out.update({"reward": torch.tensor([float(sum(rewards.values()))], dtype=torch.float32, device=dev),
                    "done": torch.tensor([self._finished], device=dev),
                    "terminated": torch.tensor([terminated], device=dev),
                    "truncated": torch.tensor([truncated], device=dev)})
        return TensorDict(out, batch_size=self.batch_size, device=dev)

    def _rng(self):
        return self._game.unwrapped.np_random


class MPEParallelEnv(SeededGameBatch, ParallelEnv):
    """MPE games, one worker process each."""


class MPESerialEnv(SeededGameBatch, SerialEnv):
    """MPE games, stepped in turn in this process."""


def _make_game(task: str, max_cycles: int, seed: int, device: str, game_index: int) -> MPEEnv:
    return MPEEnv(task, max_cycles, seed, device, game_index)


def make_env(num_envs: int, seed: int, device: str, *, task: str, max_cycles: int, parallel: Union[bool, str],
             start_method: Optional[str]) -> Union[ParallelEnv, SerialEnv]:
    """``num_envs`` games of ``task`` batched to ``[num_envs]`` (see
    :func:`~lightning_marl.envs.batching.batch_games`)."""
    probe = MPEEnv(task, max_cycles, seed, device)  # checks the task here, not in a worker
    probe.close()
    factories = [functools.partial(_make_game, task, max_cycles, seed + i, str(device), i) for i in range(num_envs)]
    env = batch_games(factories, probe, ("n_agents", "n_actions", "episode_limit", "stat_keys", "obs_dim",
                                         "state_dim", "task"),
                      parallel=parallel, device=device, parallel_cls=MPEParallelEnv, serial_cls=MPESerialEnv,
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
