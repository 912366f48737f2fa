"""Reward-shaping annealing: the factor on an env's ``shaped_reward`` goes linearly 1 -> 0."""
from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import Callback


def shaping_factor(env_steps: int, anneal_steps: int, start: float = 1.0) -> float:
    """``start * max(0, 1 - env_steps / anneal_steps)``; 0 at once when ``anneal_steps == 0``
    (shaping off: the learner sees the sparse reward only)."""
    if anneal_steps <= 0:
        return 0.0
    return start * max(0.0, 1.0 - env_steps / anneal_steps)


class RewardShapingAnnealing(Callback):
    """Sets ``pl_module.reward_shaping_factor`` from ``trainer.datamodule.env_steps`` at the start of
    training and before every training batch, and logs it as ``shaping_factor``.

    The learner's reward is ``reward + factor * shaped_reward`` (Overcooked: sparse 20 per soup plus
    the package's subgoal shaping); the factor falls linearly from ``start`` (1) at 0 env steps to 0
    at ``anneal_steps`` env steps and stays 0 after (the QFIX reference runs anneal over 2.5M
    steps). ``anneal_steps = 0`` turns shaping off from the first step. Envs without a shaped
    reward ignore the factor.
    """

    def __init__(self, anneal_steps: int, start: float = 1.0):
        assert anneal_steps >= 0 and start >= 0, (anneal_steps, start)  # learner.shaping_anneal_steps: the config's
        self.anneal_steps = anneal_steps
        self.start = float(start)
        self.value = shaping_factor(0, anneal_steps, self.start)

    def _update(self, trainer, pl_module) -> None:
        self.value = shaping_factor(int(trainer.datamodule.env_steps), self.anneal_steps, self.start)
        pl_module.reward_shaping_factor = self.value

    def on_train_start(self, trainer, pl_module) -> None:
        self._update(trainer, pl_module)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._update(trainer, pl_module)

    def logged_values(self) -> dict[str, float]:
        """Written with each row of training metrics (callbacks.train_metrics)."""
        return {"shaping_factor": self.value}

    def state_dict(self) -> dict[str, Any]:
        return {"anneal_steps": self.anneal_steps, "start": self.start, "value": self.value}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # the schedule itself comes from the config; the value is recomputed from env_steps anyway
        self.value = float(state_dict.get("value", self.value))
