"""The LightningDataModule: environments, episode collector and a TensorDict replay of episodes."""
from __future__ import annotations

import dataclasses
import inspect
import math
import random
import time
from typing import Any, Iterator, Optional

import lightning as L
import numpy as np
import torch
from tensordict import TensorDict
from torch.utils.data import DataLoader, IterableDataset
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

from lightning_marl.config.schema import EnvConfig, TrainConfig
from lightning_marl.data.collector import collect_episodes, mark_timeouts_terminal
from lightning_marl.data.priority import EpisodePrioritySampler
from lightning_marl.data.workers import CollectorProcesses, CollectorThread
from lightning_marl.envs import env_config, family_options, make_env
from lightning_marl.envs.contract import OBS
from lightning_marl.models.policy import RecurrentPolicy

RANK_SEED_OFFSET = 100_003


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


class _TrainingStream(IterableDataset):
    """Alternates collection rounds and sampled batches until the env-step budget is spent.

    ``dm.pending_updates`` counts the updates left in the current round, so that a run resumed
    from a checkpoint taken inside a round finishes that round's updates before collecting again.
    """

    def __init__(self, dm: "MARLDataModule"):
        self.dm = dm

    def __iter__(self) -> Iterator[TensorDict]:
        dm = self.dm
        dm.restore_rng_states()
        while True:
            if dm.trainer is not None and dm.trainer.should_stop:  # e.g. a signal (callbacks/signals.py)
                dm.stop_background_collection()
                return
            if dm.pending_updates == 0:
                if dm.budget_spent():
                    dm.stop_background_collection()
                    if dm.trainer is not None:
                        dm.trainer.should_stop = True  # epochs are unbounded: the env-step budget ends the run
                    return
                dm.collect_round()
                ready = len(dm.replay) >= max(dm.batch_size, dm.warmup_episodes)
                dm.pending_updates = dm.updates_per_round if ready else 0
                continue
            dm.pending_updates -= 1
            yield dm.sample()


class MARLDataModule(L.LightningDataModule):
    """Owns the training and evaluation environments, the collector and the episode replay.

    Each collection round plays one episode in each of ``num_envs`` games with the module's
    agent (epsilon-greedy), stores the padded episodes in replay and then yields
    ``updates_per_round`` batches of ``batch_size`` episodes to the trainer. The counters
    ``env_steps`` and ``episodes`` are what every schedule reads. Under DDP each rank has its
    own environments (seed offset by rank) and replay; ranks stop together.

    With ``async_collection`` a background thread (:class:`~lightning_marl.data.workers.CollectorThread`)
    plays the rounds with a copy of the agent
    (refreshed after every round the learner takes in) while the learner trains: environments in
    worker processes (``ParallelEnv``) then step while the learner computes. Acting lags the
    learner by up to two rounds, and runs are no longer bitwise reproducible.

    With ``collector_processes = P > 0`` the training games live in P worker processes
    (:class:`~lightning_marl.data.workers.CollectorProcesses`), ``num_envs / P`` games each, and a
    round is whatever one worker finished: environments step on every core while the learner
    trains (not bitwise reproducible either).
    """

    def __init__(self, cfg: TrainConfig):
        super().__init__()
        data = cfg.data
        self.env_cfg = env_config(cfg.env)
        self.env_name = self.env_cfg.name
        # e.g. train on random starts, test on the fixed one (keys checked against the env's schema)
        self.eval_env_cfg = dataclasses.replace(self.env_cfg, **dict(cfg.eval.env))
        self.num_envs, self.buffer_size, self.batch_size = data.num_envs, data.buffer_size, data.batch_size
        self.updates_per_round, self.warmup_episodes = data.updates_per_round, data.warmup_episodes
        self.total_env_steps, self.eval_num_envs = cfg.total_env_steps, cfg.eval.num_envs
        self.seed, self.env_device = cfg.seed, cfg.device
        self.keep_replay_in_checkpoint = cfg.checkpoint.replay
        self.async_collection = data.async_collection
        self.collector_processes = data.collector_processes
        self.env_workers, self.start_method = data.env_workers, data.start_method
        self.prioritized = data.prioritized
        self.priority_alpha, self.priority_beta = data.priority_alpha, data.priority_beta
        self.priority_beta_anneal_steps = data.priority_beta_anneal_steps or cfg.total_env_steps
        self.timeout_as_terminal = self.env_cfg.timeout_as_terminal
        self._collector: Optional[CollectorThread | CollectorProcesses] = None  # asynchronous collection
        self._base_seed = cfg.seed
        self.env_steps = 0
        self.episodes = 0
        self.rounds = 0
        self.pending_updates = 0
        self.last_stats: dict[str, float] = {}
        self.train_env = self.eval_env = None
        self.replay: Optional[TensorDictReplayBuffer] = None
        self._info: Optional[dict] = None
        self._start_time = time.perf_counter()
        self._start_steps = 0

    # -- environment facts -------------------------------------------------------------
    def _make(self, num_envs: int, seed: int, env_cfg: Optional[EnvConfig] = None):
        return make_env(self.env_cfg if env_cfg is None else env_cfg, num_envs, seed, self.env_device,
                        workers=self.env_workers, start_method=self.start_method)

    def env_info(self) -> dict[str, Any]:
        """n_agents, n_actions, obs_dim, state_dim, episode_limit, stat_keys, shaped_reward."""
        if self._info is None:
            env = self.train_env if self.train_env is not None else self._make(1, self.seed)
            self._info = describe_env(env)
            if env is not self.train_env:
                env.close(raise_if_closed=False)
        return self._info

    # -- Lightning hooks ---------------------------------------------------------------
    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_env is not None:
            return
        rank = self.trainer.global_rank if self.trainer is not None else 0
        base = self.seed + RANK_SEED_OFFSET * rank
        L.seed_everything(base, verbose=False)  # exploration and replay sampling differ across ranks
        self._base_seed = base
        if not self.collector_processes:  # otherwise the worker processes own the training games
            self.train_env = self._make(self.num_envs, base)
        self.eval_env = self._make(self.eval_num_envs, base + 50_000, self.eval_env_cfg)
        sampler = (EpisodePrioritySampler(self.buffer_size, self.priority_alpha, self.priority_beta)
                   if self.prioritized else None)
        self.replay = TensorDictReplayBuffer(storage=LazyTensorStorage(self.buffer_size), sampler=sampler,
                                             batch_size=self.batch_size)

    def teardown(self, stage: Optional[str] = None) -> None:
        self.stop_background_collection()
        for env in (self.train_env, self.eval_env):
            if env is not None:
                env.close(raise_if_closed=False)
        self.train_env = self.eval_env = None

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_TrainingStream(self), batch_size=None, num_workers=0, collate_fn=_identity)

    # -- collection --------------------------------------------------------------------
    def _actor(self, epsilon) -> RecurrentPolicy:
        module = self.trainer.lightning_module
        return RecurrentPolicy(module.agent, epsilon, module.device)

    def budget_spent(self) -> bool:
        spent = self.env_steps >= self.total_env_steps
        if self.trainer is not None and self.trainer.world_size > 1:
            spent = self.trainer.strategy.reduce_boolean_decision(spent, all=False)
        return spent

    def collect_round(self) -> dict[str, float]:
        """Play one round (or take the background collector's next one) and store it in replay."""
        module = self.trainer.lightning_module
        if self.collector_processes or self.async_collection:
            if self._collector is None:
                self._collector = self._start_collector(module)
            episodes, stats = self._collector.next_round(module)
        else:
            was_training = module.training
            module.eval()
            episodes, stats = collect_episodes(self.train_env, self._actor(lambda: module.epsilon),
                                               self.env_info()["episode_limit"])
            module.train(was_training)
        if self.timeout_as_terminal:
            mark_timeouts_terminal(episodes)
        self.replay.extend(episodes.to("cpu"))  # replay lives on the host; one copy per sampled batch
        self.env_steps += int(stats["length"].sum())
        self.episodes += int(episodes.batch_size[0])
        self.rounds += 1
        self.last_stats = {k: float(v.mean()) for k, v in stats.items()}
        return self.last_stats

    def _start_collector(self, module) -> CollectorThread | CollectorProcesses:
        if self.collector_processes:
            return CollectorProcesses(
                self.env_cfg, module.agent, module.epsilon, processes=self.collector_processes,
                games=self.num_envs // self.collector_processes, seed=self._base_seed + 104_729 * self.rounds,
                start_method=self.start_method)
        return CollectorThread(self.train_env, self.env_info()["episode_limit"], module,
                               seed=self._base_seed + 7_919 * (self.rounds + 1))  # the rank's seed (DDP)

    def stop_background_collection(self) -> None:
        if self._collector is not None:
            self._collector.close()
            self._collector = None

    def sample(self) -> TensorDict:
        """B episodes, trimmed to the longest one in the batch (+1 for the final observation).
        With prioritized replay they carry ``index`` and ``priority_weight``; beta grows linearly
        from ``priority_beta`` to 1 over ``priority_beta_anneal_steps`` env steps (the budget if unset)."""
        if self.prioritized:
            progress = min(1.0, self.env_steps / max(self.priority_beta_anneal_steps, 1))
            self.replay.sampler.beta = self.priority_beta + (1.0 - self.priority_beta) * progress
        batch = self.replay.sample()
        longest = int(batch.get("filled").sum(1).max())
        return batch[:, : longest + 1]

    def update_priorities(self, index: torch.Tensor, priority: torch.Tensor) -> None:
        """New priorities (largest |TD error| per episode) for the episodes at replay ``index``."""
        self.replay.update_priority(index.cpu(), priority.detach().cpu())

    def env_steps_per_second(self) -> float:
        elapsed = time.perf_counter() - self._start_time
        return (self.env_steps - self._start_steps) / max(elapsed, 1e-9)

    @torch.no_grad()
    def evaluate(self, module, episodes: int) -> dict[str, float]:
        """Greedy episodes on the evaluation envs: mean return and mean of each env statistic."""
        totals: dict[str, list] = {}
        done = 0
        was_training = module.training
        module.eval()
        while done < episodes:
            _, stats = collect_episodes(self.eval_env, RecurrentPolicy(module.agent, lambda: 0.0, module.device,
                                                                    require_finite=True),
                                        self.env_info()["episode_limit"])
            take = min(episodes - done, len(stats["return"]))
            for key, value in stats.items():
                totals.setdefault(key, []).append(value[:take])
            done += take
        module.train(was_training)
        return {key: float(torch.cat(v).mean()) for key, v in totals.items()}

    # -- checkpointing -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Counters, the round position, the replay contents (switchable), the environments' and
        the global RNG states: with these a run stopped between two updates continues exactly."""
        state = {"env": env_state(self.env_cfg), "seed": self.seed,
                 "env_steps": self.env_steps, "episodes": self.episodes, "rounds": self.rounds,
                 "pending_updates": self.pending_updates, "last_stats": dict(self.last_stats),
                 "rng": _global_rng_states()}
        if self.keep_replay_in_checkpoint and self.replay is not None:
            state["replay"] = replay_state(self.replay)
        for name in ("train_env", "eval_env"):
            env = getattr(self, name)
            if env is not None and _has_method(env, "rng_state"):
                state[name + "_rng"] = env.rng_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Called by Lightning after :meth:`setup`, so environments and replay exist already."""
        self.env_steps, self.episodes, self.rounds = state["env_steps"], state["episodes"], state["rounds"]
        self.pending_updates, self.last_stats = state["pending_updates"], dict(state["last_stats"])
        self._start_steps, self._start_time = self.env_steps, time.perf_counter()
        if "replay" in state:
            load_replay_state(self.replay, state["replay"])
        for name in ("train_env", "eval_env"):
            env = getattr(self, name)
            if name + "_rng" in state and _has_method(env, "set_rng_state"):
                env.set_rng_state(state[name + "_rng"])
        self._pending_rng = state["rng"]

    def restore_rng_states(self) -> None:
        """Put back the global RNG states of the checkpoint, right before training resumes."""
        rng = getattr(self, "_pending_rng", None)
        if rng is not None:
            _set_global_rng_states(rng)
            self._pending_rng = None


def replay_state(replay: TensorDictReplayBuffer) -> dict[str, Any]:
    """The replay for a checkpoint: the episodes it holds (not its whole preallocated capacity, as
    TorchRL's ``state_dict`` stores), in slot order, with the writer's and sampler's state."""
    n = len(replay)
    state = {"length": n, "writer": replay.writer.state_dict(), "sampler": replay.sampler.state_dict()}
    if n:
        episodes = replay.storage[:n].exclude("index").clone()  # a copy: a view would save the whole storage
        state.update(episodes=episodes.to_dict(), batch_size=list(episodes.batch_size))  # [n, episode_limit + 1]
    return state


def load_replay_state(replay: TensorDictReplayBuffer, state: dict[str, Any]) -> None:
    """Put back :func:`replay_state` (or TorchRL's own ``state_dict``, in checkpoints written before 2026-11-29)."""
    if "length" not in state:
        replay.load_state_dict(state)
        return
    if state["length"]:
        replay.extend(TensorDict(state["episodes"], batch_size=state["batch_size"]))  # slots 0..n-1, in order
    replay.writer.load_state_dict(state["writer"])
    replay.sampler.load_state_dict(state["sampler"])


def env_state(env_cfg: EnvConfig) -> dict[str, Any]:
    """The env config as plain values, for the checkpoint's record."""
    return {"name": env_cfg.name, "timeout_as_terminal": env_cfg.timeout_as_terminal, **family_options(env_cfg)}


def _has_method(env, name: str) -> bool:
    """Looked up on the class: batched TorchRL envs forward unknown attributes to their workers."""
    return callable(getattr(type(env), name, None))


def _global_rng_states() -> dict[str, Any]:
    """The global RNG states as tensors and plain numbers (a checkpoint loads with weights_only=True)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)}
    states = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_global_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    numpy_state = states["numpy"]
    if isinstance(numpy_state, dict):
        numpy_state = (numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                       numpy_state["has_gauss"], numpy_state["cached_gaussian"])
    np.random.set_state(numpy_state)  # (a tuple in checkpoints written before 2026-11-29)
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _identity(x):
    return x
