"""Build and run one training job from a composed Hydra config."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from callbacks.epsilon import EpsilonAnnealing
from callbacks.evaluation import GreedyEvaluation
from callbacks.target_update import TargetNetworkUpdate
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
        keep_replay_in_checkpoint=cfg.checkpoint.replay)


def build_module(cfg: DictConfig, env_info: dict) -> MARLModule:
    return MARLModule(env_info, OmegaConf.to_container(cfg.agent, resolve=True),
                      OmegaConf.to_container(cfg.mixer, resolve=True), OmegaConf.to_container(cfg.learner, resolve=True))


def build_callbacks(cfg: DictConfig, run_dir: Path) -> list:
    learner = cfg.learner
    callbacks = [
        EpsilonAnnealing(learner.epsilon_start, learner.epsilon_finish, learner.epsilon_anneal_steps),
        TargetNetworkUpdate(learner.target_update_interval, learner.target_tau),
        GreedyEvaluation(cfg.eval.interval_env_steps, cfg.eval.episodes),
        ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="step{step}", save_last=True,
                        every_n_train_steps=cfg.checkpoint.every_n_updates or None, save_top_k=-1 if False else 1,
                        auto_insert_metric_name=False),
    ]
    return callbacks


def build_loggers(cfg: DictConfig, run_dir: Path) -> list:
    kinds = {"csv": [CSVLogger], "tensorboard": [TensorBoardLogger], "both": [CSVLogger, TensorBoardLogger]}
    kind = cfg.logger.kind
    if kind not in kinds:
        raise ConfigError(f"unknown logger.kind {kind!r}; allowed: {', '.join(kinds)}")
    return [cls(save_dir=str(run_dir), name="", version="") for cls in kinds[kind]]


def run(cfg: DictConfig, run_dir: str | os.PathLike) -> dict[str, Any]:
    """Train as configured; returns the last evaluation metrics and where the outputs are."""
    validate(cfg)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule.env_info())
    callbacks = build_callbacks(cfg, run_dir)
    trainer = L.Trainer(
        max_epochs=1, max_steps=-1, logger=build_loggers(cfg, run_dir), callbacks=callbacks,
        default_root_dir=str(run_dir), use_distributed_sampler=False, num_sanity_val_steps=0,
        enable_model_summary=False, **OmegaConf.to_container(cfg.trainer, resolve=True))
    trainer.fit(module, datamodule=datamodule)
    evaluation = next(cb for cb in callbacks if isinstance(cb, GreedyEvaluation))
    return {"final": evaluation.history[-1] if evaluation.history else {}, "run_dir": str(run_dir),
            "metrics_csv": str(run_dir / "metrics.csv"), "env_steps": datamodule.env_steps}
