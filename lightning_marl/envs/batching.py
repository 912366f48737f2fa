"""Batches of single-game environments for the envs that wrap a Python game: Overcooked, SMACLite,
SMACv2, the Gymnasium and PettingZoo multi-agent games. In worker processes: TorchRL's ``ParallelEnv``;
in this process: ``SerialEnv``, or :class:`LoopedGames` for the games with numpy-level hooks
(:class:`SeededGame`: LBF, RWARE, MPE)."""
from __future__ import annotations

import functools
import json
import os
import signal
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.envs import EnvBase, ParallelEnv, SerialEnv

from lightning_marl.envs.contract import ACTION, MASK, OBS, STATE


class GameBatch:
    """What a batch answers in this process, never asking its workers.

    A ``ParallelEnv`` forwards unknown attributes to its workers: ``hasattr(env, name)`` is always
    True there, and calling a name the games lack kills them. So the checkpoint hooks live here:
    ``rng_state()`` / ``set_rng_state()`` (no game randomness to save by default; a family with
    seeded games overrides them), and ``close()`` of a batch that never started, or was closed
    already, is a no-op (the data module may build a batch only to read its specs), and leaves this
    process's torch threads as they were: TorchRL's batched ``close`` raises them by the number of games
    (undoing what its ``ParallelEnv`` start takes away, and a ``SerialEnv`` never took), which turned
    the run's ``threads: 1`` into 2 once the data module had closed its probe batch.
    """

    def __init__(self, *args, **kwargs):
        if isinstance(self, ParallelEnv):  # its start would lower this process's threads by the workers'
            kwargs.setdefault("num_threads", torch.get_num_threads())
        super().__init__(*args, **kwargs)

    def close(self, *, raise_if_closed: bool = False) -> None:
        threads = torch.get_num_threads()
        try:
            super().close(raise_if_closed=raise_if_closed)
        finally:
            torch.set_num_threads(threads)

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
    """The reset, step, checkpoint and seeding hooks of one game (an ``EnvBase`` wrapping a Gymnasium or
    PettingZoo game ``_game``) that is seeded on its first reset and keeps a numpy generator (``_rng()``),
    at position ``game_index`` of its batch.

    The game class gives ``_arrays(obs)``: the contract's values of the game's observations as numpy
    arrays (observations ``[N, obs]`` float32, action mask ``[N, A]`` bool, state ``[S]`` float32), and
    ``_advance(actions)``: one step of the game (``self._t`` already counts it) as (observations, team
    reward, terminated, truncated). :meth:`reset_arrays` / :meth:`step_arrays` play the game at that
    level (what :class:`LoopedGames` calls); ``_reset`` / ``_step`` wrap them for TorchRL (one game in a
    ``ParallelEnv`` worker). ``masks_change``: whether the action mask varies (then the action spec's
    mask follows it, so that ``rand_action()`` respects it)."""

    masks_change = True

    def reset_arrays(self) -> tuple:
        seed, self._seed = self._seed, None  # the first reset seeds the game, later ones continue its RNG
        obs, _ = self._game.reset(seed=seed)
        self._t, self._finished = 0, False
        return self._arrays(obs)

    def step_arrays(self, actions: list) -> tuple:
        """(observations, action mask, state, reward, terminated, truncated) after ``actions`` (ints)."""
        if self._finished:
            raise RuntimeError(f"{self.label}: step() on a finished game (t={self._t}); reset it first")
        self._t += 1
        obs, reward, terminated, truncated = self._advance(actions)
        self._finished = terminated or truncated
        return (*self._arrays(obs), reward, terminated, truncated)

    def _tensordict(self, obs, mask, state, **flags) -> TensorDict:
        dev = self.device
        mask = torch.as_tensor(mask, device=dev)
        if self.masks_change:
            self.full_action_spec[ACTION].update_mask(mask)
        agents = TensorDict({OBS[1]: torch.as_tensor(obs, device=dev), MASK[1]: mask},
                            batch_size=[len(obs)], device=dev)
        fields = {OBS[0]: agents, STATE: torch.as_tensor(state, device=dev)}
        fields.update({k: torch.as_tensor(np.asarray([v]), device=dev) for k, v in flags.items()})
        return TensorDict(fields, batch_size=self.batch_size, device=dev)

    def _reset(self, tensordict=None, **kwargs) -> TensorDict:
        return self._tensordict(*self.reset_arrays(), done=False, terminated=False, truncated=False)

    def _step(self, tensordict: TensorDictBase) -> TensorDict:
        obs, mask, state, reward, terminated, truncated = self.step_arrays(tensordict.get(ACTION).reshape(-1).tolist())
        return self._tensordict(obs, mask, state, reward=np.float32(reward), done=terminated or truncated,
                                terminated=terminated, truncated=truncated)

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


class LoopedGames(GameBatch, EnvBase):
    """``num_envs`` :class:`SeededGame` games batched to ``[num_envs]`` in this process, stepped in a
    loop at the numpy level (:meth:`SeededGame.step_arrays`), their outputs joined into one tensor per
    key.

    Why not TorchRL's ``SerialEnv``: it steps each game through the game's own ``EnvBase.step`` (specs,
    a tensordict per game) and then gathers the games' tensordicts; on LBF with one game that doubled
    the cost of a step. The games play exactly as in a ``SerialEnv`` (same seeds, same order of draws).
    Partial steps (``"_step"``, written by ``rollout(break_when_all_done=True)``) step only the flagged
    games, the others returning their last observation, reward 0 and their done flags (which TorchRL
    discards); partial resets (``"_reset"``) reset only the flagged games. RNG state: a list with each
    game's, as ``SerialEnv`` gives it.
    """

    batch_locked = True

    def __init__(self, num_envs: int, factories: Sequence[Callable[[], EnvBase]], device=None):
        games = [factory() for factory in factories]
        super().__init__(batch_size=torch.Size([num_envs]), device=device)
        self.games = games
        probe = games[0]
        self.observation_spec = probe.observation_spec.expand(num_envs).to(self.device)
        self.action_spec = probe.full_action_spec.expand(num_envs).to(self.device)
        self.reward_spec = probe.full_reward_spec.expand(num_envs).to(self.device)
        self.done_spec = probe.full_done_spec.expand(num_envs).to(self.device)
        self._action_leaf = self.full_action_spec[ACTION]  # its mask follows the games' (rand_action)
        mask = getattr(probe.full_action_spec[ACTION], "mask", None)  # a fixed mask (expand drops it)
        if mask is not None:
            self._action_leaf.update_mask(mask.expand(num_envs, *mask.shape).to(self.device))
        self._outputs: list = [None] * num_envs  # each game's last (obs, mask, state, terminated, truncated)

    def start(self) -> None:
        """Nothing to start: the games are built with the batch (``SerialEnv`` / ``ParallelEnv`` build theirs here)."""

    def _flags(self, tensordict: Optional[TensorDictBase], key: str) -> list:
        flags = None if tensordict is None else tensordict.get(key, None)
        return [True] * len(self.games) if flags is None else flags.reshape(-1).tolist()

    def _current(self, k: int) -> torch.Tensor:
        """Entry ``k`` of every game's last output (0 observations, 1 action mask, 2 state), joined."""
        return torch.as_tensor(np.stack([out[k] for out in self._outputs]), device=self.device)

    def _joined(self, rewards: Optional[list]) -> TensorDict:
        """Every game's last output as the batch's tensordict (with ``rewards``, after a step)."""
        dev, outs = self.device, self._outputs
        obs, mask = self._current(0), self._current(1)
        if self.games[0].masks_change:
            self._action_leaf.update_mask(mask)
        terminated = torch.tensor([[o[3]] for o in outs], device=dev)
        truncated = torch.tensor([[o[4]] for o in outs], device=dev)
        agents = TensorDict({OBS[1]: obs, MASK[1]: mask}, batch_size=obs.shape[:2], device=dev)
        fields = {OBS[0]: agents, STATE: self._current(2), "done": terminated | truncated, "terminated": terminated,
                  "truncated": truncated}
        if rewards is not None:
            fields["reward"] = torch.tensor(rewards, dtype=torch.float32, device=dev).unsqueeze(-1)
        return TensorDict(fields, batch_size=self.batch_size, device=dev)

    def _reset(self, tensordict=None, **kwargs) -> TensorDict:
        for i, (game, flag) in enumerate(zip(self.games, self._flags(tensordict, "_reset"))):
            if flag:
                self._outputs[i] = (*game.reset_arrays(), False, False)
        return self._joined(None)

    def _step(self, tensordict: TensorDictBase) -> TensorDict:
        actions = tensordict.get(ACTION).tolist()
        rewards = [0.0] * len(self.games)
        for i, (game, flag) in enumerate(zip(self.games, self._flags(tensordict, "_step"))):
            if flag:
                obs, mask, state, rewards[i], terminated, truncated = game.step_arrays(actions[i])
                self._outputs[i] = (obs, mask, state, terminated, truncated)
        return self._joined(rewards)

    def play(self, act: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], max_steps: int) -> TensorDict:
        """What ``rollout(max_steps, policy, auto_reset=True, break_when_any_done=False,
        break_when_all_done=True)`` returns for a policy given as ``act(observations [B,N,O], action masks
        [B,N,A]) -> actions [B,N]`` (called once per step, for every game, as the rollout calls its policy),
        with the keys an episode needs: the observations, masks, state and action of each step and the
        ``"next"`` observations, masks, state, reward and done flags; ``[B, T]`` with T the steps until every
        game has ended (at most ``max_steps``). Games that have ended are not stepped and their rows repeat
        their last step's, as in TorchRL's rollout; the same games, draws and values (tested).

        Why not TorchRL's ``rollout``: per step it builds, copies and merges tensordicts (the env's
        output, ``step_mdp``, the copy it stacks, the partial-step merge); with one LBF game that cost as
        much as the game's step and the policy together."""
        games, dev = self.games, self.device
        for i, game in enumerate(games):
            self._outputs[i] = (*game.reset_arrays(), False, False)
        rows: list = [None] * len(games)  # each game's (obs, mask, state, action, next obs, mask, state,
        steps, playing = [], [True] * len(games)  # reward, terminated, truncated) of its last step
        for _ in range(max_steps):
            actions = act(self._current(0), self._current(1)).cpu().numpy()
            for i, game in enumerate(games):
                if playing[i]:
                    before = self._outputs[i]
                    after = game.step_arrays(actions[i].tolist())
                    rows[i] = (*before[:3], actions[i], *after)
                    self._outputs[i] = (*after[:3], *after[4:])
                    playing[i] = not (after[4] or after[5])
            steps.append(list(rows))
            if not any(playing):
                break

        def field(k: int, dtype=None) -> torch.Tensor:  # [B, T, ...]
            joined = np.stack([np.stack([row[k] for row in step]) for step in steps], axis=1)
            return torch.as_tensor(joined if dtype is None else joined.astype(dtype), device=dev)

        batch = [len(games), len(steps)]
        terminated, truncated = field(8, bool).unsqueeze(-1), field(9, bool).unsqueeze(-1)
        nxt = TensorDict({OBS: field(4), MASK: field(5), STATE: field(6), "reward": field(7, np.float32).unsqueeze(-1),
                          "done": terminated | truncated, "terminated": terminated, "truncated": truncated},
                         batch_size=batch, device=dev)
        return TensorDict({OBS: field(0), MASK: field(1), STATE: field(2), ACTION: field(3, np.int64), "next": nxt},
                          batch_size=batch, device=dev)

    def _set_seed(self, seed) -> None:
        for i, game in enumerate(self.games):  # game i continues from seed + i at its next reset, as built
            game._set_seed(None if seed is None else seed + i)

    def rng_state(self) -> list:
        return [game.rng_state() for game in self.games]

    def set_rng_state(self, states) -> None:
        for game, state in zip(self.games, states):
            game.set_rng_state(torch.as_tensor(state))

    def close(self, *, raise_if_closed: bool = False) -> None:
        if not self.is_closed:
            for game in self.games:
                game.close(raise_if_closed=False)
        super().close(raise_if_closed=raise_if_closed)


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
