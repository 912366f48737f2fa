"""Greedy evaluation every N env steps: test return mean and every env statistic (win rate...)."""
from __future__ import annotations

import logging
from typing import Any, Callable

import torch
from lightning.pytorch.callbacks import Callback

from lightning_marl.errors import DivergenceError
from lightning_marl.loggers import log_row

log = logging.getLogger(__name__)


def describe(metrics: dict[str, float]) -> str:
    """``return 19.30, length 11.0, big_box 0.00`` from an evaluation's ``test/<stat>_mean`` values."""
    return ", ".join(f"{k[len('test/'):-len('_mean')]} {v:.2f}" for k, v in metrics.items()
                     if k.startswith("test/") and k.endswith("_mean"))


class GreedyEvaluation(Callback):
    """Runs ``episodes`` greedy episodes (epsilon 0) on the evaluation envs at the start of training,
    after the updates of the collection round in which ``interval_env_steps`` env steps have passed
    since the last evaluation (so an evaluation sees what the round's data taught), and at the end
    when updates were made or env steps played since the last one.
    Writes ``test/return_mean`` and ``test/<stat>_mean`` (e.g. ``test/battle_won_mean`` = win rate)
    with the env-step count straight to the loggers, so no evaluation row is dropped, and logs a
    line with the results. With ``start_value``, also ``test/q_tot_start_mean``: the learner's Q_tot of
    the greedy joint action at the episodes' first step, beside the return it predicts. Under DDP
    each rank evaluates ``episodes`` on its own envs and the means are averaged over ranks."""

    def __init__(self, interval_env_steps: int, episodes: int, skip_final: Callable[[], bool] = lambda: False,
                 start_value: bool = False):
        self.interval, self.episodes, self.start_value = interval_env_steps, episodes, start_value
        self.skip_final = skip_final  # a run stopped by a signal ends without the final evaluation
        self.last_eval_step = -1
        self.last_eval_update = -1
        self.history: list[dict[str, float]] = []

    def evaluate(self, trainer, pl_module) -> dict[str, float]:
        dm = trainer.datamodule
        try:
            stats = dm.evaluate(pl_module.agent, self.episodes, pl_module.start_value if self.start_value else None)
        except DivergenceError as err:  # never a return computed from non-finite Q values
            pl_module.diverged(f"greedy evaluation: {err}")
        if trainer.world_size > 1:  # every rank evaluates on its own envs: average over ranks
            stats = {k: float(trainer.strategy.reduce(torch.tensor(v, device=pl_module.device), reduce_op="mean"))
                     for k, v in sorted(stats.items())}
        metrics = {f"test/{k}_mean": v for k, v in stats.items()}
        metrics.update({"env_steps": float(dm.env_steps), "episodes": float(dm.episodes)})
        self.last_eval_step, self.last_eval_update = dm.env_steps, trainer.global_step
        self.history.append(metrics)
        if trainer.is_global_zero:
            # the index of the update just done, as training rows use
            log_row(trainer.loggers, metrics, update=max(trainer.global_step - 1, 0))
            log.info("greedy evaluation at env step %d (%d episodes): %s", dm.env_steps, self.episodes,
                     describe(metrics))
        return metrics

    def on_train_start(self, trainer, pl_module) -> None:
        if self.last_eval_step < 0:
            self.evaluate(trainer, pl_module)

    @staticmethod
    def _agreed(trainer, due: bool) -> bool:
        """Under DDP every rank evaluates (and averages) together: when any rank is due."""
        return trainer.strategy.reduce_boolean_decision(due, all=False) if trainer.world_size > 1 else due

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        dm = trainer.datamodule
        due = self.interval > 0 and dm.env_steps - self.last_eval_step >= self.interval and dm.pending_updates == 0
        if self._agreed(trainer, due):
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        moved = self.last_eval_step != trainer.datamodule.env_steps or (
            self.last_eval_update is not None and self.last_eval_update != trainer.global_step)
        if self._agreed(trainer, moved and not self.skip_final()):
            self.evaluate(trainer, pl_module)

    def state_dict(self) -> dict[str, Any]:
        return {"last_eval_step": self.last_eval_step, "last_eval_update": self.last_eval_update,
                "history": self.history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_eval_step, self.history = state["last_eval_step"], state["history"]
        self.last_eval_update = state.get("last_eval_update")  # None: a checkpoint before 2026-12-05 (env steps only)
