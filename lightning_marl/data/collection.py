"""How the training games are played: a collection strategy answers ``next_round(policy)`` with
padded episodes and their stats (:func:`~lightning_marl.data.collector.episodes_from_rollout`),
and ``close()``.

- :class:`InProcessCollection`: one episode in each training game per round, in this process, by
  TorchRL's ``EnvBase.rollout`` (partial steps). Bitwise reproducible; resumes exactly (rounds start
  at episode boundaries, the games' RNG is in :meth:`~InProcessCollection.state_dict`).
- :class:`WorkerCollection`: P worker processes of TorchRL's ``MultiAsyncCollector`` own the games
  and keep playing while the learner trains; a round is the next ``games`` whole episodes any worker
  finished. Not bitwise reproducible: episodes finish in arrival order and may span a weight update.
"""
from __future__ import annotations

import atexit
import contextlib
import copy
import functools
import os
import signal
import threading
from typing import Any, Iterator, Optional

import torch
import multiprocessing as mp
from tensordict import TensorDict
from torchrl.collectors import MultiAsyncCollector
from torchrl.envs import InitTracker, TransformedEnv

from lightning_marl.data.collector import collect_episodes, episodes_from_trajectories
from lightning_marl.data.environments import EnvSource
from lightning_marl.models.policy import RecurrentPolicy

WORKER_SEED_OFFSET = 7_919


class InProcessCollection:
    """Rounds of :func:`~lightning_marl.data.collector.collect_episodes` on ``env``."""

    def __init__(self, env, episode_limit: int):
        self.env, self.episode_limit = env, episode_limit

    def next_round(self, policy: RecurrentPolicy) -> tuple[TensorDict, dict]:
        return collect_episodes(self.env, policy, self.episode_limit)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.env.rng_state()} if _has_method(self.env, "rng_state") else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "rng" in state and _has_method(self.env, "set_rng_state"):
            self.env.set_rng_state(state["rng"])

    def close(self) -> None:
        self.env.close(raise_if_closed=False)


class WorkerCollection:
    """``processes`` workers with ``games`` games each, driven by TorchRL's ``MultiAsyncCollector``.

    The workers start at the first :meth:`next_round`. Each round first publishes the policy's
    weights and epsilon (TorchRL's shared-memory weight sync: the workers' copies are views of one
    shared buffer, so they act with them from their next step on), then returns ``games`` whole
    episodes, in the order they finished. Worker ``i`` seeds its games and its exploration with
    ``seed + 7919 (i + 1)``. Workers ignore SIGINT/SIGTERM (the trainer stops after its update and
    closes them) and exit when the training process dies, however it dies (a thread waits on the
    parent's sentinel; TorchRL's own detection, a closed pipe, never fires under ``fork``).
    """

    def __init__(self, source: EnvSource, episode_limit: int, stat_keys=(), *, processes: int, games: int,
                 seed: int, start_method: Optional[str] = None):
        self.source, self.episode_limit, self.stat_keys = source, episode_limit, tuple(stat_keys)
        self.processes, self.games, self.seed = processes, games, seed
        self.start_method = str(start_method) if start_method else "spawn"
        self.policy: Optional[RecurrentPolicy] = None
        self.collector: Optional[MultiAsyncCollector] = None
        self._rounds: Optional[Iterator] = None

    def _start(self, policy: RecurrentPolicy) -> None:
        self.policy = RecurrentPolicy(copy.deepcopy(policy.agent).cpu().requires_grad_(False),
                                      float(policy.epsilon), torch.device("cpu"))
        factories = [functools.partial(_worker_games, self.source, self.games, self.seed + WORKER_SEED_OFFSET * (i + 1))
                     for i in range(self.processes)]
        with _start_method(self.start_method):
            self.collector = MultiAsyncCollector(
                factories, self.policy, frames_per_batch=self.games * self.episode_limit,
                total_frames=-1, trajs_per_batch=self.games, traj_format="padded",
                auto_register_policy_transforms=False, init_fn=_worker_init)
        self._rounds = iter(self.collector)
        atexit.register(self.close)  # before multiprocessing's exit hook joins the (non-daemonic) workers

    def next_round(self, policy: RecurrentPolicy) -> tuple[TensorDict, dict]:
        if self.collector is None:
            self._start(policy)
        else:
            self.policy.load_state_dict(policy.state_dict())  # agent weights and epsilon
            self.collector.update_policy_weights_()
        trajectories = next(self._rounds)
        return episodes_from_trajectories(trajectories, self.episode_limit, self.stat_keys)

    def close(self) -> None:
        if self.collector is not None:
            atexit.unregister(self.close)
            self.collector.shutdown(raise_on_error=False)
            self.collector = self._rounds = None


def _worker_games(source: EnvSource, games: int, seed: int):
    """The games of one worker (runs in the worker): ``is_init`` marks episode starts for the policy."""
    torch.manual_seed(seed)  # the worker's exploration draws
    return TransformedEnv(source.make(games, seed, in_process=True), InitTracker())


def _worker_init() -> None:
    """Runs first in each worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = mp.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), name="exit-with-trainer", daemon=True).start()


def _exit_with(sentinel: int) -> None:
    from multiprocessing.connection import wait

    wait([sentinel])  # readable once the parent process has exited
    os._exit(0)


@contextlib.contextmanager
def _start_method(method: str):
    """TorchRL's collectors start their workers with the global start method; this sets it to
    ``data.start_method`` while they start, then puts the previous one back."""
    previous = mp.get_start_method(allow_none=True)
    mp.set_start_method(method, force=True)
    try:
        yield
    finally:
        mp.set_start_method(previous, force=True)


def _has_method(env, name: str) -> bool:
    """Looked up on the class: batched TorchRL envs forward unknown attributes to their workers."""
    return callable(getattr(type(env), name, None))
