"""Training metrics against env steps, every ``trainer.log_every_n_steps`` updates."""
from __future__ import annotations

import torch
from lightning.pytorch.callbacks import Callback

from lightning_marl.loggers import log_row


class TrainMetrics(Callback):
    """Writes one row of training metrics to every logger every ``trainer.log_every_n_steps`` updates:
    the update's statistics (``train/loss`` as ``loss``, TD error, Q values, the gradient norm before
    clipping: what ``training_step`` returns under ``"stats"`` and ``last_grad_norm``), the latest
    collected episodes' statistics (``train/return`` ...), ``env_steps``, ``episodes``, ``epsilon`` and
    ``env_steps_per_s``, and the current value of every schedule callback that reports one
    (``logged_values()``: QFIX's ``intervention``, Overcooked's ``shaping_factor``). Under DDP each
    value is the mean over ranks.

    Why not ``LightningModule.log``: it indexes rows by update and costs a sync per call; rows here
    go to the loggers against env steps (:func:`lightning_marl.loggers.log_row`)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % trainer.log_every_n_steps:
            return
        dm = trainer.datamodule
        stats = dict(outputs["stats"]) if isinstance(outputs, dict) and "stats" in outputs else {}
        metrics = {f"train/{k}": float(v) for k, v in stats.items() if k != "loss"}
        metrics["train/grad_norm"] = float(pl_module.last_grad_norm)
        metrics.update({f"train/{k}": float(v) for k, v in dm.last_stats.items()})
        metrics.update({"loss": float(stats.get("loss", float("nan"))), "env_steps": float(dm.env_steps),
                        "episodes": float(dm.episodes), "epsilon": float(pl_module.epsilon),
                        "env_steps_per_s": float(dm.env_steps_per_second())})
        for callback in trainer.callbacks:  # schedules report their current value (intervention, shaping)
            if callable(getattr(callback, "logged_values", None)):
                metrics.update({k: float(v) for k, v in callback.logged_values().items()})
        if trainer.world_size > 1:  # every rank calls this at the same update: average over ranks
            keys = sorted(metrics)
            values = trainer.strategy.reduce(torch.tensor([metrics[k] for k in keys], device=pl_module.device),
                                             reduce_op="mean")
            metrics = dict(zip(keys, values.tolist()))
        if trainer.is_global_zero:
            log_row(trainer.loggers, metrics, update=trainer.global_step - 1)
