"""Linear epsilon annealing by environment steps."""
from __future__ import annotations

from lightning.pytorch.callbacks import Callback


def linear(start: float, finish: float, steps: int, t: int) -> float:
    """``start + (finish - start) * min(1, t / steps)`` (``finish`` at once when ``steps == 0``)."""
    if steps <= 0:
        return finish
    return start + (finish - start) * min(1.0, t / steps)


class EpsilonAnnealing(Callback):
    """Sets ``pl_module.epsilon`` from the env-step counter before each collection round (the replay
    warm-up's rounds included, which no training batch separates) and after each update: epsilon goes
    linearly from ``start`` to ``finish`` over ``anneal_steps`` env steps."""

    def __init__(self, start: float, finish: float, anneal_steps: int):
        self.start, self.finish, self.anneal_steps = start, finish, anneal_steps

    def _update(self, trainer, pl_module) -> None:
        pl_module.epsilon = linear(self.start, self.finish, self.anneal_steps, trainer.datamodule.env_steps)

    def on_train_start(self, trainer, pl_module) -> None:
        self._update(trainer, pl_module)
        trainer.datamodule.round_hooks.append(lambda env_steps: self._update(trainer, pl_module))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._update(trainer, pl_module)
