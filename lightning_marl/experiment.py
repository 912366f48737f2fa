"""Build and run one training job from its validated, typed config (:class:`TrainConfig`)."""
from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lightning_marl.callbacks.budget import BudgetStop
from lightning_marl.callbacks.diagnostics import Diagnostics
from lightning_marl.callbacks.epsilon import EpsilonAnnealing
from lightning_marl.callbacks.evaluation import GreedyEvaluation
from lightning_marl.callbacks.priorities import PriorityUpdate
from lightning_marl.callbacks.progress import EnvStepProgressBar
from lightning_marl.callbacks.qfix_annealing import InterventionAnnealing
from lightning_marl.callbacks.reward_shaping import RewardShapingAnnealing
from lightning_marl.callbacks.signals import StopOnSignal
from lightning_marl.callbacks.target_update import TargetNetworkUpdate
from lightning_marl.callbacks.train_metrics import TrainMetrics
from lightning_marl.checkpoint_files import (
    CheckpointError,
    CheckpointSummary,
    architecture_differences,
    check_world_size,
    load_checkpoint,
    safe_loading,
    tidy,
)
from lightning_marl.checkpointing import AtomicCheckpointIO
from lightning_marl.config.schema import TrainConfig, plain
from lightning_marl.data.datamodule import MARLDataModule
from lightning_marl.errors import Interrupted
from lightning_marl.loggers import build_loggers, finish_loggers, start_loggers
from lightning_marl.module import MARLModule
from lightning_marl.output import configure_output

log = logging.getLogger(__name__)


def build_datamodule(cfg: TrainConfig) -> MARLDataModule:
    return MARLDataModule(cfg)


def build_module(cfg: TrainConfig, env_info: dict) -> MARLModule:
    return MARLModule(env_info, cfg.agent, cfg.mixer, cfg.learner)


class FlushLoggersOnCheckpoint(Callback):
    """Write buffered metrics to disk whenever a checkpoint is saved, so that a run killed after a
    checkpoint has every metric up to that checkpoint on disk."""

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        for logger in trainer.loggers:
            logger.save()


def build_callbacks(cfg: TrainConfig, run_dir: Path, env_info: dict, stop: StopOnSignal) -> list:
    learner = cfg.learner
    callbacks = [stop]
    if cfg.data.prioritized:
        callbacks.append(PriorityUpdate())
    if env_info.get("shaped_reward"):
        callbacks.append(RewardShapingAnnealing(learner.shaping_anneal_steps))
    if learner.intervention_anneal_steps:
        callbacks.append(InterventionAnnealing(learner.intervention_anneal_steps))
    diagnose = cfg.diagnostics.every_n_updates > 0
    if diagnose:
        callbacks.append(Diagnostics(cfg.diagnostics.every_n_updates))
    evaluation = GreedyEvaluation(cfg.eval.interval_env_steps, cfg.eval.episodes, skip_final=lambda: stop.stopped,
                                  start_value=diagnose)
    callbacks += [
        EpsilonAnnealing(learner.epsilon_start, learner.epsilon_finish, learner.epsilon_anneal_steps),
        TargetNetworkUpdate(learner.target_update_interval, learner.target_tau),
        evaluation,
        TrainMetrics(),
        FlushLoggersOnCheckpoint(),
        ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="step{step}", save_last=True,
                        every_n_train_steps=cfg.checkpoint.every_n_updates or None,
                        save_top_k=-1 if cfg.checkpoint.keep_all else 1,
                        auto_insert_metric_name=False, enable_version_counter=False,
                        save_on_train_epoch_end=False),  # the final state is saved by run() itself
    ]
    if cfg.trainer.enable_progress_bar:
        callbacks.append(EnvStepProgressBar(cfg.total_env_steps,
                                            lambda: evaluation.history[-1] if evaluation.history else {}))
    callbacks.append(BudgetStop())  # last: the other callbacks see the final update as before
    return callbacks


def run(cfg: TrainConfig, run_dir: str | os.PathLike, ckpt_path: Optional[str | os.PathLike] = None,
        extra_callbacks: Sequence[Callback] = (), summary: Optional[CheckpointSummary] = None) -> dict[str, Any]:
    """Train as configured (continuing from ``ckpt_path`` if given; ``summary``: what the caller has
    read from it already) and write everything to ``run_dir``; returns the last evaluation metrics and
    where the outputs are.

    ``cfg`` is the validated config (:func:`lightning_marl.config.load`, or ``python train.py``'s):
    nothing here checks or completes it again."""
    if not isinstance(cfg, TrainConfig):
        raise TypeError("run() takes the validated TrainConfig (lightning_marl.config.load(overrides))")
    configure_output()
    run_dir = Path(run_dir)
    resumed_step = resumed_env_steps = None
    if ckpt_path is not None:
        summary = summary if summary is not None else CheckpointSummary.of(load_checkpoint(ckpt_path))
        resumed_step, resumed_env_steps = summary.global_step, summary.env_steps
    run_dir.mkdir(parents=True, exist_ok=True)
    tidy(run_dir / "checkpoints", cfg.checkpoint.keep_all)  # what an earlier crash left behind
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule.env_info())
    if ckpt_path is not None:
        differences = architecture_differences(summary.hyper_parameters, module.hparams)
        if differences:
            raise CheckpointError(f"checkpoint {ckpt_path} was trained with another architecture "
                                  f"({'; '.join(differences)}); allowed: the run's own agent and mixer settings")
    stop = StopOnSignal()
    callbacks = build_callbacks(cfg, run_dir, datamodule.env_info(), stop) + list(extra_callbacks)
    loggers = build_loggers(cfg, run_dir, resumed_step, resumed_env_steps)
    trainer = L.Trainer(
        max_epochs=-1, max_steps=-1, logger=loggers, callbacks=callbacks,
        default_root_dir=str(run_dir), use_distributed_sampler=False, num_sanity_val_steps=0,
        enable_model_summary=False, plugins=[AtomicCheckpointIO()],
        **plain(cfg.trainer))
    if ckpt_path is not None:  # (before the other ranks start)
        check_world_size(ckpt_path, summary.world_size, trainer.world_size)
    if trainer.is_global_zero:
        log.info("run folder: %s", run_dir)
        if ckpt_path is not None:
            log.info("continuing from %s (update %d)", ckpt_path, resumed_step)
            if not summary.has_replay:
                log.info("the checkpoint holds no replay (checkpoint.replay=false, or a study's finished run kept "
                         "without it): the run refills its replay before it updates again, so it is not bitwise "
                         "the run that kept its replay")
        start_loggers(loggers, cfg, run_dir)
    # checkpoints hold tensors and plain data only: loaded with weights_only=True, loading runs no code
    try:
        with stop.handling(), safe_loading():
            trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None,
                        weights_only=True if ckpt_path else None)
            last = run_dir / "checkpoints" / "last.ckpt"
            # the final state (after the final evaluation), or where a signal stopped it; the whole
            # training state, not only the weights
            trainer.save_checkpoint(last, weights_only=False)
    finally:
        datamodule.teardown()  # Lightning skips it when fit raises: collector workers must not outlive the run
        if trainer.is_global_zero:
            finish_loggers(loggers)
    tidy(run_dir / "checkpoints", cfg.checkpoint.keep_all)
    # a signal after the last round's last update: finished; before it (budget spent, updates to come): not
    if stop.stopped and (datamodule.env_steps < cfg.total_env_steps or datamodule.pending_updates > 0):
        raise Interrupted(stop.signum, f"stopped by {signal.Signals(stop.signum).name} after update "
                                       f"{trainer.global_step} (env step {datamodule.env_steps}); checkpoint: {last}; "
                                       f"continue with: train.py resume={run_dir}", hand_back=stop.hand_back)
    evaluation = next(cb for cb in callbacks if isinstance(cb, GreedyEvaluation))
    return {"final": evaluation.history[-1] if evaluation.history else {}, "run_dir": str(run_dir),
            "metrics_csv": str(run_dir / "metrics.csv"), "env_steps": datamodule.env_steps,
            "is_global_zero": trainer.is_global_zero}
