"""One-step cooperative matrix games, a whole batch stepped in one tensor op.

Every agent observes a constant 1 and the state is a constant 1: the only thing to learn is the
payoff table ``R[a_1, ..., a_N]``, given to all agents as the team reward. The episode
terminates after one step.
"""
from __future__ import annotations

import dataclasses
from typing import Any, List, Optional, Sequence

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.envs import EnvBase

from lightning_marl.config.schema import StrEnum, spec
from lightning_marl.envs.base import EnvConfig
from lightning_marl.envs.contract import ACTION, MASK, OBS, make_specs
from lightning_marl.errors import ConfigError
from lightning_marl.registry import ENVS

PAYOFFS: dict[str, list] = {
    # Son et al. (QTRAN): optimum (0, 0) = 8, not representable by VDN / QMIX.
    "non_monotonic": [[8, -12, -12], [-12, 0, 0], [-12, 0, 0]],
    # Claus & Boutilier: optimum (0, 0) = 11.
    "climbing": [[11, -30, 0], [-30, 7, 6], [0, 0, 5]],
    # Claus & Boutilier, with k = -100: optima (0, 0) and (2, 2) = 10.
    "penalty": [[10, 0, -100], [0, 2, 0], [-100, 0, 10]],
    # Additive (decomposable) payoff u[a_1] + v[a_2] with u = (0, 2, 1), v = (1, 0, 3): optimum (1, 2) = 5.
    "additive": [[1, 0, 3], [3, 2, 5], [2, 1, 4]],
}


def payoff_tensor(game: str, payoff: Optional[Sequence], n_agents: Optional[int], penalty_k: float) -> torch.Tensor:
    """The payoff tensor of shape ``[A] * N``: a named game or an explicit nested list."""
    if payoff is not None:
        table = torch.as_tensor(payoff, dtype=torch.float32)
    elif game in PAYOFFS:
        table = torch.tensor(PAYOFFS[game], dtype=torch.float32)
        if game == "penalty":
            table[0, 2] = table[2, 0] = penalty_k
    else:
        raise ConfigError(f"unknown matrix game {game!r}; allowed: {', '.join(sorted(PAYOFFS))} "
                          "or an explicit env.payoff table")
    if table.dim() < 1 or len(set(table.shape)) != 1 or table.shape[0] < 1:
        raise ConfigError(
            f"env.payoff has shape {tuple(table.shape)}; allowed: a hypercube [A] * N "
            "(every agent has the same number A of actions)")
    if n_agents is not None and table.dim() != n_agents:
        raise ConfigError(f"env.payoff has {table.dim()} dimensions for env.n_agents={n_agents}; "
                          "allowed: one dimension per agent")
    return table


def check_config(game, payoff, n_agents, penalty_k) -> None:
    """Refuse a payoff table that is not a hypercube, or that disagrees with ``n_agents``."""
    try:
        payoff_tensor(game, payoff, n_agents, penalty_k)
    except (ValueError, TypeError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"env.payoff={payoff} is not a table of numbers; allowed: a hypercube [A] * N of "
                          "numbers (every agent has the same number A of actions), e.g. [[1,0],[0,1]]") from None


class MatrixGameEnv(EnvBase):
    """A batch of one-step N-agent matrix games: reward = payoff[a_1, ..., a_N]."""

    batch_locked = True

    def __init__(self, payoff: torch.Tensor, num_envs: int, device: str | torch.device):
        super().__init__(batch_size=torch.Size([num_envs]), device=device)
        self.payoff = payoff.to(self.device)
        self.n_agents = payoff.dim()
        self.n_actions = payoff.shape[0]
        self.episode_limit = 1
        self.stat_keys: tuple[str, ...] = ()
        make_specs(self, n_agents=self.n_agents, n_actions=self.n_actions, obs_dim=1, state_dim=1)
        self._strides = torch.tensor(
            [self.n_actions ** (self.n_agents - 1 - i) for i in range(self.n_agents)], device=self.device)

    def _observe(self) -> TensorDict:
        b, n, a = self.batch_size[0], self.n_agents, self.n_actions
        agents = TensorDict({OBS[1]: torch.ones(b, n, 1, device=self.device),
                             MASK[1]: torch.ones(b, n, a, dtype=torch.bool, device=self.device)},
                            batch_size=(b, n), device=self.device)
        return TensorDict({"agents": agents, "state": torch.ones(b, 1, device=self.device)},
                          batch_size=self.batch_size, device=self.device)

    def _reset(self, tensordict: Optional[TensorDictBase] = None, **kwargs) -> TensorDict:
        td = self._observe()
        false = torch.zeros(*self.batch_size, 1, dtype=torch.bool, device=self.device)
        td.update({"done": false, "terminated": false.clone(), "truncated": false.clone()})
        return td

    def _step(self, tensordict: TensorDictBase) -> TensorDict:
        actions = tensordict.get(ACTION)
        reward = self.payoff.flatten()[(actions * self._strides).sum(-1)].unsqueeze(-1)
        td = self._observe()
        true = torch.ones(*self.batch_size, 1, dtype=torch.bool, device=self.device)
        td.update({"reward": reward, "done": true, "terminated": true.clone(),
                   "truncated": torch.zeros_like(true)})
        return td

    def _set_seed(self, seed: Optional[int]) -> None:  # deterministic: nothing to seed
        return None


def make_env(num_envs: int, seed: int, device: str, *, game: str, payoff: Optional[Sequence], n_agents: Optional[int],
             penalty_k: float) -> MatrixGameEnv:
    """Build a batch of ``num_envs`` games from config values (the options and their defaults:
    ``MatrixEnvConfig``; build through :func:`lightning_marl.envs.make_env`)."""
    env = MatrixGameEnv(payoff_tensor(game, payoff, n_agents, penalty_k), num_envs=num_envs, device=device)
    env.set_seed(seed)
    return env


class MatrixGame(StrEnum):
    non_monotonic = "non_monotonic"
    climbing = "climbing"
    penalty = "penalty"
    additive = "additive"


@ENVS.register
@dataclasses.dataclass
class MatrixEnvConfig(EnvConfig):
    """One-step cooperative matrix games (lightning_marl/envs/matrix.py)."""

    builds = staticmethod(make_env)
    name: str = "matrix"
    game: MatrixGame = spec(MatrixGame.non_monotonic, "a named game; ignored when env.payoff is given")
    payoff: Optional[List[Any]] = spec(None, "an explicit N-dimensional payoff table [A]*N, e.g. '[[1,0],[0,1]]'")
    n_agents: Optional[int] = spec(None, "checked against the payoff's dimensions when set", ge=1)
    penalty_k: float = spec(-100.0, "the penalty game's k")

    def check(self) -> None:
        check_config(**self.options())

