"""Episode collection: a batch of environments plays one whole episode each per round.

TorchRL's ``EnvBase.rollout(break_when_all_done=True)`` steps the batch until every game is
done, stepping only unfinished games (partial steps, also across ``ParallelEnv`` workers).
Rounds start at episode boundaries, so whole episodes go to replay and a run stopped between
rounds resumes exactly. The policy keeps the agents' recurrent state for the round.
"""
from __future__ import annotations

from typing import Optional

import torch
from tensordict import TensorDict, TensorDictBase

from lightning_marl.envs.batching import LoopedGames
from lightning_marl.envs.contract import ACTION, MASK, OBS, SHAPED_REWARD
from lightning_marl.models.policy import RecurrentPolicy


def episodes_from_rollout(rollout: TensorDictBase, length: int, stat_keys=(),
                          filled: Optional[torch.Tensor] = None) -> tuple[TensorDict, dict]:
    """Turn a ``[B, T']`` rollout into ``[B, length + 1]`` padded episodes and per-episode stats.
    ``filled [B, T']`` marks each row's own steps; by default, the steps up to the row's first done
    (a round of :func:`collect_episodes`). TorchRL's collectors give it as ``("collector", "mask")``
    (:func:`episodes_from_trajectories`).

    Episode keys: ``obs [L+1,N,O]``, ``avail [L+1,N,A]``, ``state [L+1,S]`` (index t = before step t;
    index ``len`` holds the final observation), ``action [L+1,N]``, ``reward [L+1]``,
    ``terminated [L+1]``, ``filled [L+1]`` (True for the episode's steps), optional
    ``shaped_reward [L+1]``. Padding is zero (all actions available).
    """
    batch, steps = rollout.batch_size
    nxt = rollout.get("next")
    done = nxt.get("done").squeeze(-1)
    if filled is None:
        before = done.long().cumsum(1) - done.long()
        filled = before == 0
    lengths = filled.sum(1)

    def seq(key):  # value before each step, plus the final next value
        return torch.cat([rollout.get(key)[:, :1], nxt.get(key)], dim=1)

    fields = {
        "obs": seq(OBS),
        "avail": seq(MASK),
        "state": seq("state"),
        "action": rollout.get(ACTION),
        "reward": nxt.get("reward").squeeze(-1) * filled,
        "terminated": nxt.get("terminated").squeeze(-1) & filled,
        "filled": filled,
    }
    if SHAPED_REWARD in nxt.keys():
        fields["shaped_reward"] = nxt.get(SHAPED_REWARD).squeeze(-1) * filled
    out = TensorDict({}, batch_size=[batch, length + 1], device=rollout.device)
    for key, value in fields.items():
        pad = value.new_zeros((batch, length + 1) + value.shape[2:])
        pad[:, : value.shape[1]] = value
        out.set(key, pad)
    # unused steps get all actions available, so that no max runs over an empty set
    has_obs = torch.arange(length + 1, device=done.device) <= lengths.unsqueeze(1)
    out.set("avail", out.get("avail") | ~has_obs[..., None, None])
    last = (lengths - 1).clamp(min=0)
    idx = torch.arange(batch, device=done.device)
    stats = {"return": fields["reward"].sum(1).float(), "length": lengths.float()}
    for key in stat_keys:
        stats[key] = nxt.get(key).squeeze(-1)[idx, last].float()
    if "shaped_reward" in fields and "shaped_return" not in stats:
        stats["shaped_return"] = fields["shaped_reward"].sum(1).float()
    return out, stats


def episodes_from_trajectories(trajectories: TensorDictBase, length: int, stat_keys=()) -> tuple[TensorDict, dict]:
    """Whole trajectories from TorchRL's collectors (``trajs_per_batch``, ``traj_format="padded"``:
    ``[K, T']``, zero padding, ``("collector", "mask")`` on each row's steps) as padded episodes."""
    return episodes_from_rollout(trajectories, length, stat_keys, filled=trajectories.get(("collector", "mask")))


def mark_timeouts_terminal(episodes: TensorDict) -> None:
    """``env.timeout_as_terminal``: the last step of every stored episode is a terminal. Rounds
    store whole episodes, so an episode whose last step is not terminated ended by the time limit;
    the QFIX reference (SMAC's ``continuing_episode: False``) and EPyMARL store that as a terminal."""
    filled, terminated = episodes.get("filled"), episodes.get("terminated")
    last = (filled.sum(1) - 1).clamp(min=0)
    rows = torch.arange(filled.shape[0], device=filled.device)
    terminated[rows, last] = filled[rows, last]


def collect_episodes(env, policy: RecurrentPolicy, length: int) -> tuple[TensorDict, dict]:
    """Play one episode in each of the env's games with ``policy`` (its recurrent state starts
    afresh: the round starts from ``env.reset()``); returns padded episodes and their stats. Games
    batched by :class:`~lightning_marl.envs.batching.LoopedGames` play the same round through its
    :meth:`~lightning_marl.envs.batching.LoopedGames.play`, the others through TorchRL's ``rollout``."""
    if isinstance(env, LoopedGames):
        rollout = env.play(acting(policy), length)
    else:
        rollout = env.rollout(length, policy=policy, auto_reset=True, break_when_any_done=False,
                              break_when_all_done=True)
    return episodes_from_rollout(rollout, length, getattr(env, "stat_keys", ()))


def acting(policy: RecurrentPolicy):
    """``policy`` as ``act(observations, masks) -> actions`` for one episode of a batch of games: it keeps
    the agents' recurrent state and last actions from call to call (a fresh one per episode)."""
    state = {"hidden": None, "prev": None}

    def act(obs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        action, state["hidden"], _ = policy.act(obs.to(policy.device), mask.to(policy.device), state["hidden"],
                                                state["prev"])
        state["prev"] = action
        return action

    return act
