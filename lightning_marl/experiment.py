"""Build and run one training job from a composed Hydra config."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from callbacks.epsilon import EpsilonAnnealing
from callbacks.evaluation import GreedyEvaluation
from callbacks.qfix_annealing import InterventionAnnealing
from callbacks.reward_shaping import RewardShapingAnnealing
from callbacks.target_update import TargetNetworkUpdate
from lightning_marl.checkpointing import AtomicCheckpointIO, ContinuingCSVLogger
from lightning_marl.config import validate
from lightning_marl.data.datamodule import MARLDataModule
from lightning_marl.module import MARLModule
from lightning_marl.registry import ConfigError


def build_datamodule(cfg: DictConfig) -> MARLDataModule:
    return MARLDataModule(
        OmegaConf.to_container(cfg.env, resolve=True), num_envs=cfg.data.num_envs, buffer_size=cfg.data.buffer_size,
        batch_size=cfg.data.batch_size, updates_per_round=cfg.data.updates_per_round,
        warmup_episodes=cfg.data.warmup_episodes, total_env_steps=cfg.total_env_steps,
        eval_num_envs=cfg.eval.num_envs, seed=cfg.seed, device=cfg.device,
        keep_replay_in_checkpoint=cfg.checkpoint.replay, async_collection=cfg.data.get("async_collection", False),
        collector_processes=cfg.data.get("collector_processes", 0),
        worker_start_method=cfg.data.get("worker_start_method", None), prioritized=cfg.data.get("prioritized", False),
        priority_alpha=cfg.data.get("priority_alpha", 0.6), priority_beta=cfg.data.get("priority_beta", 0.4),
        priority_beta_anneal_steps=cfg.data.get("priority_beta_anneal_steps", None),
        eval_env=dict(cfg.eval.get("env") or {}))


def build_module(cfg: DictConfig, env_info: dict) -> MARLModule:
    return MARLModule(env_info, OmegaConf.to_container(cfg.agent, resolve=True),
                      OmegaConf.to_container(cfg.mixer, resolve=True), OmegaConf.to_container(cfg.learner, resolve=True))


class FlushLoggersOnCheckpoint(Callback):
    """Write buffered metrics to disk whenever a checkpoint is saved, so that a run killed after a
    checkpoint has every metric up to that checkpoint on disk."""

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        for logger in trainer.loggers:
            logger.save()


def build_callbacks(cfg: DictConfig, run_dir: Path, env_info: dict) -> list:
    learner = cfg.learner
    callbacks = []
    if env_info.get("shaped_reward"):
        callbacks.append(RewardShapingAnnealing(cfg.env.get("shaping_anneal_steps", 0)))
    if learner.get("intervention_anneal_steps", 0):
        callbacks.append(InterventionAnnealing(learner.intervention_anneal_steps))
    callbacks += [
        EpsilonAnnealing(learner.epsilon_start, learner.epsilon_finish, learner.epsilon_anneal_steps),
        TargetNetworkUpdate(learner.target_update_interval, learner.target_tau),
        GreedyEvaluation(cfg.eval.interval_env_steps, cfg.eval.episodes),
        FlushLoggersOnCheckpoint(),
        ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="step{step}", save_last=True,
                        every_n_train_steps=cfg.checkpoint.every_n_updates or None,
                        save_top_k=-1 if cfg.checkpoint.get("keep_all", False) else 1,
                        auto_insert_metric_name=False),
    ]
    return callbacks


def build_loggers(cfg: DictConfig, run_dir: Path, resumed_step: Optional[int] = None) -> list:
    kinds = {"csv": ["csv"], "tensorboard": ["tensorboard"], "both": ["csv", "tensorboard"]}
    kind = cfg.logger.kind
    if kind not in kinds:
        raise ConfigError(f"unknown logger.kind {kind!r}; allowed: {', '.join(kinds)}")
    loggers = []
    for name in kinds[kind]:
        if name == "csv":
            loggers.append(ContinuingCSVLogger(save_dir=str(run_dir), name="", version="", keep_until_step=resumed_step))
        else:
            loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="", version=""))
    return loggers


def find_checkpoint(resume: str) -> tuple[Path, Path]:
    """(run folder, checkpoint file) from a checkpoint path or a run folder (its last.ckpt)."""
    path = Path(resume).expanduser()
    if path.is_dir():
        ckpt = path / "checkpoints" / "last.ckpt"
        if not ckpt.is_file():
            raise ConfigError(f"resume={resume!r}: no checkpoints/last.ckpt in that folder; allowed: a run folder "
                              "with checkpoints/last.ckpt, or a .ckpt file")
        return path, ckpt
    if path.is_file():
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        return run_dir, path
    raise ConfigError(f"resume={resume!r} does not exist; allowed: a run folder or a .ckpt file")


def run(cfg: DictConfig, run_dir: str | os.PathLike, ckpt_path: Optional[str | os.PathLike] = None,
        extra_callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Train as configured (continuing from ``ckpt_path`` if given) and write everything to
    ``run_dir``; returns the last evaluation metrics and where the outputs are."""
    validate(cfg)
    run_dir = Path(run_dir)
    resumed_step = None
    if ckpt_path is not None:
        resumed_step = int(torch.load(ckpt_path, map_location="cpu", weights_only=False, mmap=True)["global_step"])
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule.env_info())
    callbacks = build_callbacks(cfg, run_dir, datamodule.env_info()) + list(extra_callbacks)
    trainer = L.Trainer(
        max_epochs=-1, max_steps=-1, logger=build_loggers(cfg, run_dir, resumed_step), callbacks=callbacks,
        default_root_dir=str(run_dir), use_distributed_sampler=False, num_sanity_val_steps=0,
        enable_model_summary=False, plugins=[AtomicCheckpointIO()],
        **OmegaConf.to_container(cfg.trainer, resolve=True))
    if trainer.is_global_zero:
        print(f"run folder: {run_dir}  (metrics: {run_dir / 'metrics.csv'}, checkpoints: {run_dir / 'checkpoints'})",
              flush=True)
    # our own checkpoints hold replay TensorDicts and RNG states: trusted, loaded with weights_only=False
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None,
                weights_only=False if ckpt_path else None)
    trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt")  # the final state, after the final evaluation
    evaluation = next(cb for cb in callbacks if isinstance(cb, GreedyEvaluation))
    return {"final": evaluation.history[-1] if evaluation.history else {}, "run_dir": str(run_dir),
            "metrics_csv": str(run_dir / "metrics.csv"), "env_steps": datamodule.env_steps,
            "is_global_zero": trainer.is_global_zero}
