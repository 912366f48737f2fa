"""Where the data module's games come from: :class:`EnvSource` builds batches of games of one env
config and :func:`describe_env` says what the learner needs to know of them."""
from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Any, Optional

from lightning_marl.config.schema import EnvWorkers, StartMethod, plain
from lightning_marl.envs import EnvConfig
from lightning_marl.envs.contract import OBS


def describe_env(env) -> dict[str, Any]:
    """What the learner needs to know of a batch of games: n_agents, n_actions, obs_dim (and
    obs_grid_shape where observations are flattened grids), state_dim, episode_limit, stat_keys,
    shaped_reward."""
    spec = env.observation_spec
    obs_dim = int(spec[OBS].shape[-1])
    # (C, W, H) where observations are flattened grids; looked up statically, since a ParallelEnv
    # forwards unknown attributes to its workers, which fail on a name their game lacks
    grid = inspect.getattr_static(env, "obs_grid_shape", None)
    return {
        "n_agents": int(env.n_agents),
        "n_actions": int(env.n_actions),
        "obs_dim": obs_dim,
        "obs_grid_shape": [int(v) for v in grid] if grid is not None and math.prod(grid) == obs_dim else None,
        "state_dim": int(spec["state"].shape[-1]),
        "episode_limit": int(env.episode_limit),
        "stat_keys": tuple(getattr(env, "stat_keys", ())),
        "shaped_reward": "shaped_reward" in spec.keys(),
    }


def rng_state(env) -> Optional[Any]:
    """The games' RNG state, or None for games without one. Looked up on the class: batched TorchRL
    envs forward unknown attributes to their workers."""
    return env.rng_state() if callable(getattr(type(env), "rng_state", None)) else None


def set_rng_state(env, state: Optional[Any]) -> None:
    if state is not None and callable(getattr(type(env), "set_rng_state", None)):
        env.set_rng_state(state)


@dataclasses.dataclass
class EnvSource:
    """Batches of games of one env config, for training (``env``) and for greedy evaluation
    (``eval_env``: the same config with ``eval.env`` applied, e.g. the fixed start)."""

    env: EnvConfig
    eval_env: EnvConfig
    device: str
    workers: EnvWorkers
    start_method: Optional[StartMethod]
    _info: Optional[dict] = dataclasses.field(default=None, repr=False)

    def make(self, num_envs: int, seed: int, evaluation: bool = False, in_process: bool = False,
             device: Optional[str] = None):
        """``num_envs`` games; ``in_process``: batched in this process whatever ``data.env_workers``
        says (the games of a collector worker process); ``device``: instead of the run's."""
        env = self.eval_env if evaluation else self.env
        return env.make(num_envs, seed, device or self.device, EnvWorkers.in_process if in_process else self.workers,
                        self.start_method)

    def info(self, env=None) -> dict[str, Any]:
        """:func:`describe_env` of ``env``, or of one game built for the purpose (then closed)."""
        if self._info is None:
            probe = env if env is not None else self.make(1, 0)
            self._info = describe_env(probe)
            if probe is not env:
                probe.close(raise_if_closed=False)
        return self._info

    def record(self) -> dict[str, Any]:
        """The training env config as plain values, for the checkpoint."""
        return plain(self.env)
