"""The run's end: the env-step budget, not an epoch count (epochs are unbounded)."""
from __future__ import annotations

from lightning.pytorch.callbacks import Callback


class BudgetStop(Callback):
    """Stops the trainer once the data module's env-step budget is spent and the last round's
    updates are done (``datamodule.budget_spent()``; under DDP every rank gets the same answer, so
    ranks stop together). Also at the end of an epoch, which happens when the budget ran out
    before the replay held a batch."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        dm = trainer.datamodule
        if dm.pending_updates == 0 and dm.budget_spent():
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.datamodule.budget_spent():
            trainer.should_stop = True
