"""Asynchronous collection: rounds are played while the learner trains, by a thread
(:class:`CollectorThread`, over the data module's training envs) or by worker processes that own
their games (:class:`CollectorProcesses`, so the environments step on every core).

Both answer ``next_round(module)`` (the next finished round, and the module's newest agent weights
and epsilon handed over for the rounds that follow) and ``close()``. Acting lags the learner by a
round or two, so such runs are not bitwise reproducible (the in-process collector is).
"""
from __future__ import annotations

import copy
import os
import signal
import queue
import threading
from typing import Any, Optional

import torch
import torch.multiprocessing as mp

from lightning_marl.data.collector import collect_episodes
from lightning_marl.models.policy import RecurrentPolicy
from lightning_marl.config.schema import EnvWorkers
from lightning_marl.envs import make_env

WORKER_SEED_OFFSET = 7_919


def _worker(index: int, env_cfg, games: int, seed: int, shared_agent, lock, epsilon,
            version, rounds: "mp.Queue", stopping, parent: int) -> None:
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the trainer stops after its update and closes us
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    rounds.cancel_join_thread()  # exiting never waits for the learner to read what was queued

    def go_on() -> bool:  # stop when told, and when the training process died without telling (killed)
        return not stopping.is_set() and os.getppid() == parent

    try:
        env = make_env(env_cfg, games, seed, "cpu", workers=EnvWorkers.in_process)  # its own games, in turn
        agent = copy.deepcopy(shared_agent)
        generator = torch.Generator().manual_seed(seed)
        actor = RecurrentPolicy(agent, lambda: epsilon.value, torch.device("cpu"), generator=generator)
        seen = -1
        while go_on():
            if version.value != seen:
                with lock:
                    seen = version.value
                    agent.load_state_dict(shared_agent.state_dict())
            item = collect_episodes(env, actor, env.episode_limit)
            while go_on():
                try:
                    rounds.put((index, item), timeout=0.1)
                    break
                except queue.Full:
                    continue
        env.close()
    except BaseException as err:  # reported by next_round() in the training process
        rounds.put((index, RuntimeError(f"collector worker {index} failed: {err!r}")))


class CollectorProcesses:
    """``processes`` workers, each playing one episode in each of its ``games`` per round.

    ``next_round(module)`` publishes the module's agent weights and epsilon into shared memory (a
    worker picks them up before its next round), then returns the next finished round (padded
    episodes and their stats, as :func:`~lightning_marl.data.collector.collect_episodes`), in
    whatever order the workers finish them; ``close()`` stops the workers.
    """

    def __init__(self, env_cfg, agent: torch.nn.Module, epsilon: float, *,
                 processes: int, games: int, seed: int, start_method: Optional[str] = None):
        ctx = mp.get_context(str(start_method) if start_method else "spawn")
        self.agent = copy.deepcopy(agent).cpu().eval().requires_grad_(False)
        self.agent.share_memory()
        self.lock, self.epsilon, self.version = ctx.Lock(), ctx.Value("d", float(epsilon)), ctx.Value("l", 0)
        self.rounds, self.stopping = ctx.Queue(maxsize=processes), ctx.Event()
        self.workers = [
            ctx.Process(target=_worker, name=f"marl-collector-{i}", daemon=True,
                        args=(i, env_cfg, games, seed + WORKER_SEED_OFFSET * (i + 1), self.agent, self.lock,
                              self.epsilon, self.version, self.rounds, self.stopping, os.getpid()))
            for i in range(processes)
        ]
        for worker in self.workers:
            worker.start()

    @torch.no_grad()
    def _publish(self, agent: torch.nn.Module, epsilon: float) -> None:
        with self.lock:
            for mine, theirs in zip(self.agent.state_dict().values(), agent.state_dict().values()):
                mine.copy_(theirs)
            self.version.value += 1
        self.epsilon.value = float(epsilon)

    def next_round(self, module) -> tuple[Any, dict]:
        self._publish(module.agent, module.epsilon)
        while True:
            try:
                index, item = self.rounds.get(timeout=1.0)
            except queue.Empty:
                dead = [w.name for w in self.workers if not w.is_alive()]
                if dead:
                    raise RuntimeError(f"collector workers died: {', '.join(dead)}")
                continue
            if isinstance(item, BaseException):
                raise item
            episodes, stats = item
            return episodes.clone(), {k: v.clone() for k, v in stats.items()}

    def close(self) -> None:
        self.stopping.set()  # workers notice it within one round (their puts time out every 0.1 s)
        for worker in self.workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.terminate()
                worker.join(timeout=5)
        self.rounds.cancel_join_thread()
        self.rounds.close()  # rounds still queued are dropped unread (their shared tensors go with them)


class CollectorThread:
    """Plays rounds on ``env`` in a thread with its own copy of the agent and RNG; hands them over
    through a queue of one round, so at most one finished round waits while the next is played.
    ``next_round(module)`` takes the next round, then snapshots the module's agent weights for the
    round the thread starts next (epsilon is read live from the module)."""

    def __init__(self, env, limit: int, module, seed: int):
        self.agent = copy.deepcopy(module.agent).eval().requires_grad_(False)
        self.generator = torch.Generator(device=module.device).manual_seed(seed)
        self.rounds: "queue.Queue" = queue.Queue(maxsize=1)
        self.weights: Optional[dict] = None
        self.weights_lock = threading.Lock()
        self.stopping = threading.Event()
        self.env, self.limit = env, limit
        actor = RecurrentPolicy(self.agent, lambda: module.epsilon, module.device, generator=self.generator)
        self.thread = threading.Thread(target=self._run, args=(actor,), name="marl-collector", daemon=True)
        self.thread.start()

    def _run(self, actor: RecurrentPolicy) -> None:
        try:
            while not self.stopping.is_set():
                with self.weights_lock:
                    weights, self.weights = self.weights, None
                if weights is not None:
                    self.agent.load_state_dict(weights)
                item = collect_episodes(self.env, actor, self.limit)
                while not self.stopping.is_set():
                    try:
                        self.rounds.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as err:  # surfaced in the training loop by next_round()
            self.rounds.put(err)

    def next_round(self, module) -> tuple[Any, dict]:
        item = self.rounds.get()
        if isinstance(item, BaseException):
            raise RuntimeError("background collection failed") from item
        with self.weights_lock:  # the next round the thread starts uses the newest weights
            self.weights = {k: v.detach().clone() for k, v in module.agent.state_dict().items()}
        return item

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=60)
