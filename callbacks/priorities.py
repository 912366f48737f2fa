"""Prioritized replay: each update's new episode priorities written back to the replay."""
from __future__ import annotations

from lightning.pytorch.callbacks import Callback


class PriorityUpdate(Callback):
    """After every update, the sampled episodes get their new priority ``max_t |Q_tot - G_t|``:
    ``training_step`` returns ``"priorities": (replay index [B], priority [B])`` and this callback
    hands them to the data module's ``update_priorities``, before the next batch is sampled. (The
    module and the data module do not call each other: this is the one place priorities cross.)"""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if isinstance(outputs, dict) and "priorities" in outputs:
            index, priority = outputs["priorities"]
            trainer.datamodule.update_priorities(index, priority)
