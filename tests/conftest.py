"""Shared test helpers: composing the project's Hydra config, and a tiny env with known episode lengths."""
from __future__ import annotations

from typing import Optional, Sequence

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs import EnvBase

from lightning_marl.config import compose as compose_config
from lightning_marl.envs.contract import ACTION, MASK, OBS, make_specs


@pytest.fixture
def make_config():
    return compose_config


class CountdownEnv(EnvBase):
    """Game i ends after ``lengths[i]`` steps: terminated if that is below ``limit``, truncated at
    ``limit``. Observation = steps left; reward = 1 per step; action 2 of agent 1 is unavailable."""

    batch_locked = True

    def __init__(self, lengths: Sequence[int], limit: int, n_agents: int = 2, n_actions: int = 3):
        super().__init__(batch_size=torch.Size([len(lengths)]))
        self.lengths = torch.tensor(lengths)
        self.n_agents, self.n_actions, self.episode_limit = n_agents, n_actions, limit
        self.stat_keys = ("steps_seen",)
        self.t = torch.zeros(len(lengths), dtype=torch.long)
        make_specs(self, n_agents=n_agents, n_actions=n_actions, obs_dim=1, state_dim=2, stat_keys=self.stat_keys)

    def _obs(self) -> TensorDict:
        b, n = self.batch_size[0], self.n_agents
        left = (self.lengths - self.t).float()
        mask = torch.ones(b, n, self.n_actions, dtype=torch.bool)
        mask[:, 1, 2] = False
        return TensorDict({OBS: left.view(b, 1, 1).expand(b, n, 1).clone(), MASK: mask,
                           "state": torch.stack([left, self.t.float()], -1),
                           "steps_seen": self.t.float().unsqueeze(-1)}, batch_size=self.batch_size)

    def _reset(self, td: Optional[TensorDict] = None, **kwargs) -> TensorDict:
        self.t.zero_()
        out = self._obs()
        false = torch.zeros(self.batch_size[0], 1, dtype=torch.bool)
        out.update({"done": false, "terminated": false.clone(), "truncated": false.clone()})
        return out

    def _step(self, td: TensorDict) -> TensorDict:
        assert (td.get(ACTION)[:, 1] != 2).all(), "an unavailable action was taken"
        self.t += 1
        out = self._obs()
        end = self.t >= self.lengths
        truncated = (self.t >= self.episode_limit) & ~(end & (self.lengths < self.episode_limit))
        terminated = end & (self.lengths < self.episode_limit)
        out.update({"reward": torch.ones(self.batch_size[0], 1), "terminated": terminated.unsqueeze(-1),
                    "truncated": truncated.unsqueeze(-1), "done": (terminated | truncated).unsqueeze(-1)})
        return out

    def _set_seed(self, seed):
        return None
