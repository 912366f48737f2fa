"""The data contract every environment honours (DESIGN.md section 2).

Keys, with ``*B`` the env batch, N agents, A actions:

=============================  ===============  =========
``("agents", "observation")``  ``*B, N, obs``   float32
``("agents", "action_mask")``  ``*B, N, A``     bool (True = available)
``("agents", "action")``       ``*B, N``        int64
``"state"``                    ``*B, S``        float32
``"reward"``                   ``*B, 1``        float32, shared team reward
``"done"/"terminated"/"truncated"``  ``*B, 1``  bool; truncation (time limit) is not termination
optional stats                 ``*B, 1``        float32; read at the episode's last step
``"shaped_reward"``            ``*B, 1``        optional; the learner adds ``factor * shaped_reward``
=============================  ===============  =========

Environments also expose ``n_agents``, ``n_actions``, ``episode_limit`` and ``stat_keys``
(the names of the optional per-episode statistics they emit next to the reward).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torchrl.data import Binary, Bounded, Categorical, Composite, Unbounded

OBS = ("agents", "observation")
MASK = ("agents", "action_mask")
ACTION = ("agents", "action")
STATE = "state"
REWARD = "reward"
SHAPED_REWARD = "shaped_reward"


def make_specs(
    env,
    *,
    n_agents: int,
    n_actions: int,
    obs_dim: int,
    state_dim: int,
    stat_keys: Sequence[str] = (),
    shaped_reward: bool = False,
    obs_low: float | None = None,
    obs_high: float | None = None,
) -> None:
    """Set the observation, action, reward and done specs of ``env`` (a TorchRL EnvBase).

    Stats and the optional shaped reward are declared as observations (shape ``*B, 1``): the
    environment emits them at reset (zeros) and at every step.
    """
    batch = env.batch_size
    dev = env.device
    if obs_low is not None:
        obs_spec = Bounded(obs_low, obs_high, shape=(*batch, n_agents, obs_dim), dtype=torch.float32, device=dev)
    else:
        obs_spec = Unbounded(shape=(*batch, n_agents, obs_dim), dtype=torch.float32, device=dev)
    extras = {key: Unbounded(shape=(*batch, 1), dtype=torch.float32, device=dev) for key in stat_keys}
    if shaped_reward:
        extras[SHAPED_REWARD] = Unbounded(shape=(*batch, 1), dtype=torch.float32, device=dev)
    env.observation_spec = Composite(
        extras,
        agents=Composite(
            observation=obs_spec,
            action_mask=Binary(n=n_actions, shape=(*batch, n_agents, n_actions), dtype=torch.bool, device=dev),
            shape=(*batch, n_agents),
            device=dev,
        ),
        state=Unbounded(shape=(*batch, state_dim), dtype=torch.float32, device=dev),
        shape=batch,
        device=dev,
    )
    env.action_spec = Composite(
        agents=Composite(
            action=Categorical(n=n_actions, shape=(*batch, n_agents), dtype=torch.int64, device=dev),
            shape=(*batch, n_agents),
            device=dev,
        ),
        shape=batch,
        device=dev,
    )
    env.reward_spec = Unbounded(shape=(*batch, 1), dtype=torch.float32, device=dev)
    env.done_spec = Composite(
        done=Categorical(2, shape=(*batch, 1), dtype=torch.bool, device=dev),
        terminated=Categorical(2, shape=(*batch, 1), dtype=torch.bool, device=dev),
        truncated=Categorical(2, shape=(*batch, 1), dtype=torch.bool, device=dev),
        shape=batch,
        device=dev,
    )


def reset_flags(shape=(1,), device=None) -> dict:
    """``done``/``terminated``/``truncated`` all False, as every reset returns them."""
    false = torch.zeros(*shape, dtype=torch.bool, device=device)
    return {"done": false, "terminated": false.clone(), "truncated": false.clone()}
