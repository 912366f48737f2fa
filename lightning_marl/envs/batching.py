"""Batches of single-game environments (TorchRL ``ParallelEnv`` / ``SerialEnv``) for the envs that
wrap a Python game: Overcooked, SMACLite, SMACv2."""
from __future__ import annotations

import functools
import os
import signal
from typing import Callable, Sequence, Union

import torch
from torchrl.envs import EnvBase, ParallelEnv, SerialEnv


class GameBatch:
    """What a batch answers in this process, never asking its workers.

    A ``ParallelEnv`` forwards unknown attributes to its workers: ``hasattr(env, name)`` is always
    True there, and calling a name the games lack kills them. So the checkpoint hooks live here:
    ``rng_state()`` / ``set_rng_state()`` (no game randomness to save by default; a family with
    seeded games overrides them), and ``close()`` of a batch that never started, or was closed
    already, is a no-op (the data module may build a batch only to read its specs).
    """

    def close(self, *, raise_if_closed: bool = False) -> None:
        super().close(raise_if_closed=raise_if_closed)

    def rng_state(self):
        return torch.empty(0)

    def get_rng_state(self):
        return self.rng_state()

    def set_rng_state(self, state) -> None:
        return None


def in_worker(factory: Callable[[], EnvBase]) -> EnvBase:
    """Build a game in its worker process, which leaves SIGINT and SIGTERM to the training process:
    Ctrl+C reaches the whole process group and a scheduler signals every process, but the trainer
    stops after its update and closes the workers itself (callbacks/signals.py)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return factory()


def available_cpus() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def batch_games(factories: Sequence[Callable[[], EnvBase]], probe: EnvBase, attributes: Sequence[str], *,
                parallel: Union[bool, str], device, parallel_cls: type, serial_cls: type,
                start_method=None, spare_cores: int = 0, use_buffers=None) -> Union[ParallelEnv, SerialEnv]:
    """Batch the games made by ``factories``: one worker process each (``parallel_cls``) when
    ``parallel`` is true and there is more than one game, else stepped in turn (``serial_cls``).
    ``parallel="auto"`` uses workers only when this process may use at least
    ``len(factories) + spare_cores`` cores. The batch gets ``attributes`` copied from ``probe``
    (a game built in this process, which also validates the config before any worker starts)."""
    num_envs = len(factories)
    assert parallel in (True, False, "auto"), parallel  # data.env_workers, checked by the config
    if parallel == "auto":
        parallel = available_cpus() >= num_envs + spare_cores
    if parallel and num_envs > 1:
        kwargs = {} if use_buffers is None else {"use_buffers": use_buffers}
        factories = [functools.partial(in_worker, factory) for factory in factories]
        env = parallel_cls(num_envs, factories, device=device, mp_start_method=start_method, **kwargs)
    else:
        env = serial_cls(num_envs, list(factories), device=device)
    for name in attributes:
        setattr(env, name, getattr(probe, name))
    return env
