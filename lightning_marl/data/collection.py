"""How the training games are played: a collection strategy answers ``next_round(policy)`` with
padded episodes and their stats (:func:`~lightning_marl.data.collector.episodes_from_rollout`),
and ``close()``.

- :class:`InProcessCollection`: one episode in each training game per round, in this process, by
  TorchRL's ``EnvBase.rollout`` (partial steps). Bitwise reproducible; resumes exactly (rounds start
  at episode boundaries, the games' RNG is in :meth:`~InProcessCollection.state_dict`).
- :class:`WorkerCollection`: P worker processes of TorchRL's ``MultiAsyncCollector`` own the games
  and keep playing while the learner trains; a round is the next ``games`` whole episodes of the
  next worker in turn. Not bitwise reproducible: an episode may span a weight update, and what a
  worker plays ahead depends on timing.
"""
from __future__ import annotations

import atexit
import contextlib
import copy
import functools
import multiprocessing as mp
import os
import signal
import threading
from typing import Iterator, Optional

import torch
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

    def close(self) -> None:
        self.env.close(raise_if_closed=False)


class WorkerCollection:
    """``processes`` workers with ``games`` games each, each worker driven by a TorchRL
    ``MultiAsyncCollector`` of its own, taken in turn: round ``r`` is the next ``games`` whole
    episodes of worker ``r mod processes``.

    Why one collector per worker and not one collector with ``processes`` workers: that collector
    hands batches over through a queue of one slot, and a worker that cannot put its batch within
    a second (the learner evaluating or writing a checkpoint) drops it and plays on; whole-trajectory
    assembly then yields episodes without their beginning and keeps their heads for ever. A
    collector of one worker never drops: its worker waits for the learner to ask for the next batch,
    one batch (``episode_limit`` steps of each game) ahead.

    The workers start at the first :meth:`next_round`. Each round first publishes the policy's
    weights and epsilon (TorchRL's shared-memory weight sync: the workers act with them from their
    next step on, so an episode may span an update). Worker ``i`` seeds its games (on the CPU) and
    its exploration with ``seed + 7919 (i + 1)``. Workers ignore SIGINT/SIGTERM (the trainer stops
    after its update and closes them) and exit when the training process dies, however it dies (a
    thread waits on the parent's sentinel; TorchRL's own detection, a closed pipe, never fires under
    ``fork``). A worker that died is reported by the next round.
    """

    def __init__(self, source: EnvSource, episode_limit: int, stat_keys=(), *, processes: int, games: int,
                 seed: int, start_method: Optional[str] = None):
        self.source, self.episode_limit, self.stat_keys = source, episode_limit, tuple(stat_keys)
        self.processes, self.games, self.seed = processes, games, seed
        self.start_method = str(start_method) if start_method else "spawn"
        self.policy: Optional[RecurrentPolicy] = None
        self.collectors: list[MultiAsyncCollector] = []
        self._batches: list[Iterator] = []
        self._turn = 0

    @property
    def started(self) -> bool:
        return bool(self.collectors)

    def _start(self, policy: RecurrentPolicy) -> None:
        self.policy = RecurrentPolicy(copy.deepcopy(policy.agent).cpu().requires_grad_(False),
                                      float(policy.epsilon), torch.device("cpu"))
        threads = torch.get_num_threads()  # TorchRL lowers the learner's threads for its workers
        atexit.register(self.close)  # runs before multiprocessing's exit hook joins the (non-daemonic) workers
        with _start_method(self.start_method):
            for i in range(self.processes):
                seed = self.seed + WORKER_SEED_OFFSET * (i + 1)
                games = functools.partial(_worker_games, self.source, self.games, seed)
                self.collectors.append(MultiAsyncCollector(
                    [games], self.policy, frames_per_batch=self.games * self.episode_limit, total_frames=-1,
                    trajs_per_batch=self.games, traj_format="padded", auto_register_policy_transforms=False,
                    init_fn=_worker_init))
        torch.set_num_threads(threads)  # the run's `threads` setting stands
        self._batches = [iter(c) for c in self.collectors]

    def next_round(self, policy: RecurrentPolicy) -> tuple[TensorDict, dict]:
        if not self.started:
            self._start(policy)
        dead = [f"worker {i} (exit code {p.exitcode})" for i, c in enumerate(self.collectors)
                for p in c.procs if not p.is_alive()]
        if dead:  # checked first: publishing weights would wait for a dead worker's acknowledgement
            raise RuntimeError(f"collector {', '.join(dead)} died; see its error above")
        self.policy.load_state_dict(policy.state_dict())  # agent weights and epsilon
        for collector in self.collectors:
            collector.update_policy_weights_()
        trajectories = next(self._batches[self._turn])
        self._turn = (self._turn + 1) % self.processes
        return episodes_from_trajectories(trajectories, self.episode_limit, self.stat_keys)

    def close(self) -> None:
        if self.collectors:
            atexit.unregister(self.close)
            threads = torch.get_num_threads()
            for collector in self.collectors:
                collector.shutdown(raise_on_error=False)
            torch.set_num_threads(threads)
            self.collectors, self._batches = [], []


def _worker_games(source: EnvSource, games: int, seed: int):
    """The games of one worker (runs in the worker): ``is_init`` marks episode starts for the policy."""
    torch.manual_seed(seed)  # the worker's exploration draws
    return TransformedEnv(source.make(games, seed, in_process=True, device="cpu"), InitTracker())


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
