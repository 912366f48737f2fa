"""The LightningDataModule: composes the training games (:class:`~.environments.EnvSource`), a
collection strategy (:mod:`.collection`), the episode replay (:class:`~.replay.EpisodeReplay`) and
greedy evaluation (:class:`~.evaluator.GreedyEvaluator`), and counts env steps and episodes.

Its interface to the rest of the trainer:

- it asks the LightningModule for one thing, ``acting_policy()``: a
  :class:`~lightning_marl.models.policy.RecurrentPolicy` over the current agent at the current
  epsilon (:class:`Acting`);
- callbacks read ``env_steps``, ``episodes``, ``last_stats`` (means over the last round's episodes),
  ``pending_updates`` (the current round's updates still to come) and ``env_steps_per_second()``, call
  ``evaluate(agent, episodes)`` and ``update_priorities``, and add to ``round_hooks`` what must happen
  before each collection round, the replay warm-up's included (epsilon: :mod:`callbacks.epsilon`);
  ``budget_spent()`` tells :class:`~callbacks.budget.BudgetStop` when to stop the run.
"""
from __future__ import annotations

import dataclasses
import random
import time
from typing import Any, Callable, Iterator, Optional, Protocol

import lightning as L
import numpy as np
import torch
from tensordict import TensorDict
from torch.utils.data import DataLoader, IterableDataset

from lightning_marl import rank_states
from lightning_marl.checkpoint_files import RANKS, REPLAY
from lightning_marl.config.schema import SampleUnit, TrainConfig
from lightning_marl.data.collection import InProcessCollection, WorkerCollection
from lightning_marl.data.collector import mark_timeouts_terminal
from lightning_marl.data.environments import EnvSource, rng_state, set_rng_state
from lightning_marl.data.evaluator import GreedyEvaluator
from lightning_marl.data.replay import EpisodeReplay
from lightning_marl.envs import env_config
from lightning_marl.models.policy import RecurrentPolicy

RANK_SEED_OFFSET = 100_003
RESTART_SEED_OFFSET = 104_729  # worker seeds of a resumed run differ from those of its first start


class Acting(Protocol):
    """What the data module asks of the LightningModule."""

    def acting_policy(self) -> RecurrentPolicy:
        """The agent to collect with, epsilon-greedy at the current epsilon."""


class _TrainingStream(IterableDataset):
    """Alternates collection rounds and sampled batches until the env-step budget is spent.

    ``dm.pending_updates`` counts the updates left in the current round, so that a run resumed
    from a checkpoint taken inside a round finishes that round's updates before collecting again.
    The stream ends only when the budget is spent before the replay is warm, or on a stop signal;
    otherwise :class:`~callbacks.budget.BudgetStop` stops the trainer after the last round's updates.
    """

    def __init__(self, dm: "MARLDataModule"):
        self.dm = dm

    def __iter__(self) -> Iterator[TensorDict]:
        dm = self.dm
        dm.restore_rng_states()
        while True:
            if dm.trainer is not None and dm.trainer.should_stop:  # a signal during the replay warm-up
                return  # (callbacks/signals.py; after the first update Lightning checks should_stop itself)
            if dm.pending_updates == 0:
                if dm.budget_spent():
                    return
                steps = dm.env_steps
                dm.collect_round()
                batch_episodes = dm.data.batch_size if dm.data.sample == SampleUnit.episodes else 1
                ready = len(dm.replay) >= max(batch_episodes, dm.data.warmup_episodes)
                dm.pending_updates = dm.round_updates(dm.env_steps - steps) if ready else 0
                continue
            dm.pending_updates -= 1
            yield dm.sample()


class MARLDataModule(L.LightningDataModule):
    """Training games, collection, episode replay and evaluation games of one run (``cfg``).

    Each collection round plays one episode in each of ``data.num_envs`` games with the module's
    acting policy (epsilon-greedy), stores the padded episodes in replay and then yields
    ``data.updates_per_round`` batches of ``data.batch_size`` episodes to the trainer. Under DDP
    each rank has its own games (seed offset by rank) and replay; ranks stop together.

    With ``data.collector_processes = P > 0`` the training games live in P worker processes of
    TorchRL's collector (:class:`~lightning_marl.data.collection.WorkerCollection`),
    ``num_envs / P`` games each, which keep playing while the learner trains; a round is the next
    ``num_envs / P`` episodes of the next worker in turn (not bitwise reproducible).
    """

    def __init__(self, cfg: TrainConfig):
        super().__init__()
        self.data, self.seed, self.total_env_steps = cfg.data, cfg.seed, cfg.total_env_steps
        self.eval_num_envs, self.eval_epsilon = cfg.eval.num_envs, cfg.eval.epsilon
        self.keep_replay_in_checkpoint = cfg.checkpoint.replay
        env_cfg = env_config(cfg.env)
        # e.g. train on random starts, test on the fixed one (keys checked against the env's schema)
        self.source = EnvSource(env_cfg, dataclasses.replace(env_cfg, **dict(cfg.eval.env)), cfg.device,
                                cfg.data.env_workers, cfg.data.start_method)
        self.env_steps = self.episodes = self.rounds = self.pending_updates = 0
        self.update_credit = 0  # data.round_env_steps: updates_per_round x env steps not yet turned into updates
        self.round_hooks: list[Callable[[int], None]] = []  # called with env_steps before each round
        self.last_stats: dict[str, float] = {}
        self.collection: Optional[InProcessCollection | WorkerCollection] = None
        self.evaluator: Optional[GreedyEvaluator] = None
        self.replay: Optional[EpisodeReplay] = None
        self._base_seed = cfg.seed
        self._pending_rng: Optional[dict] = None
        self._env_rng: dict[str, Any] = {}  # the games' RNG states when they were closed
        self._start_time, self._start_steps = time.perf_counter(), 0

    def env_info(self) -> dict[str, Any]:
        """n_agents, n_actions, obs_dim, state_dim, episode_limit, stat_keys, shaped_reward."""
        return self.source.info()

    # -- Lightning hooks ---------------------------------------------------------------
    def setup(self, stage: Optional[str] = None) -> None:
        if self.collection is not None:
            return
        rank = self.trainer.global_rank if self.trainer is not None else 0
        base = self._base_seed = self.seed + RANK_SEED_OFFSET * rank
        L.seed_everything(base, verbose=False)  # exploration and replay sampling differ across ranks
        info, d = self.env_info(), self.data
        if d.collector_processes:  # seeds set at the first round (they depend on the rounds played)
            self.collection = WorkerCollection(self.source, info["episode_limit"], info["stat_keys"],
                                               processes=d.collector_processes,
                                               games=d.num_envs // d.collector_processes, seed=base,
                                               start_method=d.start_method)
        else:
            self.collection = InProcessCollection(self.source.make(d.num_envs, base), info["episode_limit"])
        self.evaluator = GreedyEvaluator(self.source.make(self.eval_num_envs, base + 50_000, evaluation=True),
                                         info["episode_limit"], self.eval_epsilon, seed=base + 50_000)
        self.replay = EpisodeReplay(d.buffer_size, d.batch_size, d.prioritized, d.priority_alpha, d.priority_beta,
                                    d.priority_beta_anneal_steps or self.total_env_steps,
                                    transitions=d.sample == SampleUnit.transitions)

    def teardown(self, stage: Optional[str] = None) -> None:
        """Close the games. Their RNG states are kept: Lightning tears down before ``run()`` writes
        the final checkpoint, which must still hold them (a resumed run continues exactly)."""
        if self.collection is not None or self.evaluator is not None:
            self._env_rng = self._env_rng_states()
        for part in (self.collection, self.evaluator):
            if part is not None:
                part.close()
        self.collection = self.evaluator = None

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_TrainingStream(self), batch_size=None, num_workers=0, collate_fn=_identity)

    # -- collection --------------------------------------------------------------------
    def budget_spent(self) -> bool:
        """The env-step budget is spent (on any rank, under DDP: every rank gets the same answer)."""
        spent = self.env_steps >= self.total_env_steps
        if self.trainer is not None and self.trainer.world_size > 1:
            spent = self.trainer.strategy.reduce_boolean_decision(spent, all=False)
        return spent

    def collect_round(self) -> dict[str, float]:
        """Play one round with the module's acting policy and store its episodes in replay."""
        for hook in self.round_hooks:
            hook(self.env_steps)
        if isinstance(self.collection, WorkerCollection) and not self.collection.started:
            self.collection.seed = self._base_seed + RESTART_SEED_OFFSET * self.rounds
        episodes, stats = self.collection.next_round(self.trainer.lightning_module.acting_policy())
        if self.source.env.timeout_as_terminal:
            mark_timeouts_terminal(episodes)
        self.replay.extend(episodes)
        self.env_steps += int(stats["length"].sum())
        self.episodes += int(episodes.batch_size[0])
        self.rounds += 1
        self.last_stats = {k: float(v.mean()) for k, v in stats.items()}
        return self.last_stats

    def round_updates(self, steps: int) -> int:
        """The updates a round of ``steps`` env steps gets: ``data.updates_per_round``, or with
        ``data.round_env_steps`` = S that many per S env steps, the remainder carried to the next round
        (under DDP the ranks' mean steps, so that every rank makes the same number of updates)."""
        if self.data.round_env_steps is None:
            return self.data.updates_per_round
        if self.trainer is not None and self.trainer.world_size > 1:
            mean = self.trainer.strategy.reduce(torch.tensor(float(steps), device=self.trainer.strategy.root_device),
                                                reduce_op="mean")
            steps = int(round(float(mean)))
        self.update_credit += self.data.updates_per_round * steps
        updates, self.update_credit = divmod(self.update_credit, self.data.round_env_steps)
        return updates

    def sample(self) -> TensorDict:
        """A batch of episodes from replay (see :meth:`EpisodeReplay.sample`)."""
        return self.replay.sample(self.env_steps)

    def update_priorities(self, index: torch.Tensor, priority: torch.Tensor) -> None:
        """New priorities (largest |TD error| per episode) for the episodes at replay ``index``."""
        self.replay.update_priority(index, priority)

    def env_steps_per_second(self) -> float:
        elapsed = time.perf_counter() - self._start_time
        return (self.env_steps - self._start_steps) / max(elapsed, 1e-9)

    def evaluate(self, agent: torch.nn.Module, episodes: int, start_value=None) -> dict[str, float]:
        """Greedy episodes of ``agent`` on the evaluation games: mean return and env statistics (and
        the mean of ``start_value`` of the episodes, see :meth:`GreedyEvaluator.evaluate`)."""
        return self.evaluator.evaluate(agent, episodes, start_value)

    # -- checkpointing -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Counters, the round position, the replay contents (switchable), the games' and the
        global RNG states: with these a run stopped between two updates continues exactly. Under DDP
        every rank's (:mod:`lightning_marl.rank_states`; the trainer saves rank 0's)."""
        state = {"env": self.source.record(), "seed": self.seed,
                 "env_steps": self.env_steps, "episodes": self.episodes, "rounds": self.rounds,
                 "pending_updates": self.pending_updates, "update_credit": self.update_credit,
                 "last_stats": dict(self.last_stats),
                 "rng": _global_rng_states()}
        if self.keep_replay_in_checkpoint and self.replay is not None:
            state[REPLAY] = self.replay.state_dict()
        state.update(self._env_rng_states() if self.collection is not None else self._env_rng)
        callback = self.trainer.checkpoint_callback if self.trainer is not None else None
        state[RANKS] = rank_states.save(self.trainer, state, getattr(callback, "dirpath", None))
        return state

    def _env_rng_states(self) -> dict[str, Any]:
        """The RNG states of the training games (in-process only), of the evaluation games and of the
        evaluation's exploration (``eval.epsilon``)."""
        states = {}
        for name, part in self._seeded_parts():
            if (rng := rng_state(part.env)) is not None:
                states[name] = rng
        if self.evaluator is not None:
            states["eval_policy_rng"] = self.evaluator.rng_state()
        return states

    def _seeded_parts(self):
        """(checkpoint key, part) of the parts whose games live in this process."""
        return [(name, part) for name, part in (("train_env_rng", self.collection), ("eval_env_rng", self.evaluator))
                if isinstance(part, (InProcessCollection, GreedyEvaluator))]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Called by Lightning after :meth:`setup`, so games and replay exist already. ``state`` is
        rank 0's: another rank reads its own from the checkpoint's folder."""
        if self.trainer is not None:
            state = rank_states.restore(self.trainer, self.trainer.ckpt_path, state)
        self.env_steps, self.episodes, self.rounds = state["env_steps"], state["episodes"], state["rounds"]
        self.pending_updates, self.last_stats = state["pending_updates"], dict(state["last_stats"])
        self.update_credit = state.get("update_credit", 0)  # (checkpoints before 2026-12-05 have none)
        self._start_steps, self._start_time = self.env_steps, time.perf_counter()
        if REPLAY in state:
            self.replay.load_state_dict(state[REPLAY])
        for name, part in self._seeded_parts():
            set_rng_state(part.env, state.get(name))
        if "eval_policy_rng" in state:
            self.evaluator.set_rng_state(state["eval_policy_rng"])
        self._pending_rng = state["rng"]

    def restore_rng_states(self) -> None:
        """Put back the global RNG states of the checkpoint, right before training resumes."""
        if self._pending_rng is not None:
            _set_global_rng_states(self._pending_rng)
            self._pending_rng = None


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
