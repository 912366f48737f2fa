"""Batches of single-game environments (TorchRL ``ParallelEnv`` / ``SerialEnv``) for the envs that
wrap a Python game: Overcooked, SMACLite, SMACv2, the Gymnasium multi-agent games."""
from __future__ import annotations

import functools
import json
import os
import signal
from typing import Callable, Sequence, Union

import numpy as np
import torch
from tensordict import TensorDict
from torchrl.envs import EnvBase, ParallelEnv, SerialEnv

from lightning_marl.envs.contract import reset_flags


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


class SeededGameBatch(GameBatch):
    """A batch of games that each keep a numpy RNG (``game_rng_state()`` / ``set_batch_rng_state()``
    on the games, game ``i`` at index ``i`` of a batch's state)."""

    def rng_state(self) -> list:
        return list(self.game_rng_state())

    def set_rng_state(self, states) -> None:
        self.set_batch_rng_state([torch.as_tensor(s) for s in states])


def _json_array(value):
    """JSON for the numpy arrays some bit generators keep in their state (MT19937's key)."""
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.integer):
        return int(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _array_from_json(obj: dict):
    return np.asarray(obj["__ndarray__"], dtype=obj["dtype"]) if "__ndarray__" in obj else obj


def numpy_rng_state(generator) -> torch.Tensor:
    """A numpy generator's state as JSON text in a uint8 tensor: data, never code, so a checkpoint
    holding it loads with ``weights_only=True``."""
    state = json.dumps(generator.bit_generator.state, default=_json_array)
    return torch.frombuffer(bytearray(state.encode()), dtype=torch.uint8).clone()


def set_numpy_rng_state(generator, state: torch.Tensor) -> None:
    text = bytes(state.cpu().numpy().tobytes()).decode()
    generator.bit_generator.state = json.loads(text, object_hook=_array_from_json)


class SeededGame:
    """The reset, checkpoint and seeding hooks of one game (an ``EnvBase`` wrapping a Gymnasium or
    PettingZoo game ``_game``) that is seeded on its first reset and keeps a numpy generator (``_rng()``),
    at position ``game_index`` of its batch. The game class gives ``_observe(obs)``: the contract's
    observation keys of the game's observations."""

    def _reset(self, tensordict=None, **kwargs) -> TensorDict:
        seed, self._seed = self._seed, None  # the first reset seeds the game, later ones continue its RNG
        obs, _ = self._game.reset(seed=seed)
        self._t, self._finished = 0, False
        out = self._observe(obs)
        out.update(reset_flags((1,), self.device))
        return TensorDict(out, batch_size=self.batch_size, device=self.device)

    def _rng(self):
        raise NotImplementedError

    def _set_seed(self, seed) -> None:
        self._seed = seed  # applied by the next reset (Gymnasium and PettingZoo seed on reset)

    def rng_state(self) -> torch.Tensor:
        return numpy_rng_state(self._rng())

    def game_rng_state(self) -> torch.Tensor:
        return self.rng_state()

    def set_rng_state(self, state: torch.Tensor) -> None:
        set_numpy_rng_state(self._rng(), state)
        self._seed = None

    def set_batch_rng_state(self, states) -> None:
        self.set_rng_state(states[self.game_index])

    def close(self, *, raise_if_closed: bool = True):
        self._game.close()
        return super().close(raise_if_closed=raise_if_closed)


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
