"""Diagnostics of the fit every N updates: the TD error, the greedy joint action's value, the agents'
action gap, the mixer's own values (QFIX: its fixing weight) and replay priorities, as ``diag/*``."""
from __future__ import annotations

import torch
from lightning.pytorch.callbacks import Callback

from lightning_marl.loggers import log_row


class Diagnostics(Callback):
    """Asks the module for its diagnostics (``pl_module.diagnose``) on every ``every_n_updates``-th
    update (the first included; 0 = never) and writes them, with the replay's priorities (max and
    median over stored episodes, prioritized replay only) and the env steps, as one row to every
    logger: ``diag/<name>`` (see :meth:`lightning_marl.module.MARLModule.diagnostics`). Under DDP each
    value is the mean over ranks."""

    def __init__(self, every_n_updates: int):
        self.every = every_n_updates

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        pl_module.diagnose = self.every > 0 and trainer.global_step % self.every == 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        pl_module.diagnose = False
        if not (isinstance(outputs, dict) and "diagnostics" in outputs):
            return
        dm = trainer.datamodule
        values = {f"diag/{k}": float(v) for k, v in outputs["diagnostics"].items()}
        values.update({f"diag/{k}": v for k, v in dm.replay.priority_stats().items()})
        if trainer.world_size > 1:  # every rank diagnoses the same update: average over ranks
            keys = sorted(values)
            reduced = trainer.strategy.reduce(torch.tensor([values[k] for k in keys], device=pl_module.device),
                                              reduce_op="mean")
            values = dict(zip(keys, reduced.tolist()))
        if trainer.is_global_zero:
            values["env_steps"] = float(dm.env_steps)
            log_row(trainer.loggers, values, update=trainer.global_step - 1)
