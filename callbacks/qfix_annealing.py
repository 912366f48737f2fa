"""QFIX intervention annealing: lambda_D goes linearly 0 -> 1 over a number of env steps."""
from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import Callback


def intervention(env_steps: int, anneal_steps: int) -> float:
    """``lambda_D = min(1, env_steps / anneal_steps)``; 1 at once when ``anneal_steps == 0`` (annealing off)."""
    if anneal_steps <= 0:
        return 1.0
    return min(1.0, max(0.0, env_steps / anneal_steps))


class InterventionAnnealing(Callback):
    """Sets the QFIX intervention ``lambda_D`` of ``pl_module.mixer`` and ``pl_module.target_mixer``
    (those that have ``set_intervention``; others are left alone) from ``trainer.datamodule.env_steps``
    at the start of training and before every training batch, and logs it as ``intervention``.

    ``Q_tot = Q_f + lambda_D (Q_fix - Q_f)``: the mixer starts as its fixee and the fix is faded in.
    """

    def __init__(self, anneal_steps: int):
        assert anneal_steps >= 0, anneal_steps  # learner.intervention_anneal_steps, checked by the config
        self.anneal_steps = anneal_steps
        self.value = 1.0 if anneal_steps == 0 else 0.0

    def _update(self, trainer, pl_module) -> bool:
        """Apply lambda_D; True when some mixer took it."""
        self.value = intervention(int(trainer.datamodule.env_steps), self.anneal_steps)
        applied = False
        for name in ("mixer", "target_mixer"):
            mixer = getattr(pl_module, name, None)
            if mixer is not None and hasattr(mixer, "set_intervention"):
                mixer.set_intervention(self.value)
                applied = True
        return applied

    def on_train_start(self, trainer, pl_module) -> None:
        self._update(trainer, pl_module)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._update(trainer, pl_module)

    def logged_values(self) -> dict[str, float]:
        """Written with each row of training metrics (callbacks.train_metrics)."""
        return {"intervention": self.value}

    def state_dict(self) -> dict[str, Any]:
        return {"anneal_steps": self.anneal_steps, "value": self.value}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.value = float(state_dict.get("value", self.value))
