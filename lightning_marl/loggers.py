"""The run's loggers (``logger=[csv,tensorboard,wandb,mlflow]``) and the one way metrics reach them:
against env steps.

Lightning's loggers are used as they are; what this module adds is the x axis. Lightning indexes
metrics by update (``global_step``), while papers and peers plot against env steps, so every
metric row goes through :func:`log_row`: TensorBoard and MLflow get ``step = env steps``, W&B gets
``env_steps`` as the step metric of every chart (``define_metric``), and ``metrics.csv`` keeps both
columns (``step``, the update's index, which resuming needs, and ``env_steps``).

A resumed run continues its W&B and MLflow runs: their ids are kept in ``<run>/logger_ids.json``.
"""
from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any, Mapping, Optional

from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from lightning_marl.checkpointing import MetricsCSV
from lightning_marl.config import plain
from lightning_marl.config.schema import TrainConfig

log = logging.getLogger(__name__)
IDS_FILE = "logger_ids.json"


class ResumableMLFlowLogger(MLFlowLogger):
    """MLflow refuses to change a parameter of a run ("Changing param values is not allowed"); a
    resumed run may change some (``total_env_steps=``), so parameters the run already has keep their
    first value (the run folder's ``.hydra/config.yaml`` holds the effective config)."""

    @rank_zero_only  # as the method it overrides: other ranks have no MLflow client
    def log_hyperparams(self, params: Any) -> None:
        flat = flatten(dict(params))
        known = self.experiment.get_run(self.run_id).data.params
        super().log_hyperparams({k: v for k, v in flat.items() if k not in known})


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a/b": 1}`` (the names Lightning's loggers give nested hyperparameters)."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _read_ids(run_dir: Path) -> dict[str, str]:
    path = run_dir / IDS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_ids(run_dir: Path, ids: dict[str, str]) -> None:
    tmp = run_dir / f".{IDS_FILE}.tmp"
    tmp.write_text(json.dumps(ids, indent=1))
    tmp.replace(run_dir / IDS_FILE)


def build_loggers(cfg: TrainConfig, run_dir: Path, resumed_step: Optional[int] = None,
                  resumed_env_steps: Optional[int] = None) -> list[Logger]:
    """The configured loggers, writing into ``run_dir`` (W&B and MLflow continue a resumed run's own
    runs, MLflow in the store it used). ``resumed_step`` / ``resumed_env_steps``: where the checkpoint
    was taken; ``metrics.csv`` keeps the rows before it, TensorBoard drops its events from there on
    (the resumed run logs them again). W&B and MLflow keep the points a crash left after the
    checkpoint: the resumed run's points for the same env steps follow them."""
    chosen = cfg.logger
    ids = _read_ids(run_dir)
    loggers: list[Logger] = []
    if chosen.csv is not None:
        loggers.append(MetricsCSV(run_dir, keep_until_step=resumed_step))
    if chosen.tensorboard is not None:
        loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="", version="", default_hp_metric=False,
                                         purge_step=resumed_env_steps))
    if chosen.wandb is not None:
        w = chosen.wandb
        ids.setdefault("wandb", uuid.uuid4().hex[:12])
        loggers.append(WandbLogger(name=run_dir.name, save_dir=str(run_dir), id=ids["wandb"], resume="allow",
                                   project=w.project, entity=w.entity, group=w.group, tags=list(w.tags),
                                   mode=str(w.mode), offline=False))
    if chosen.mlflow is not None:
        m = chosen.mlflow
        # MLflow's own default store (a SQLite file in the working folder); its file store is retired
        uri = (m.tracking_uri or ids.get("mlflow_tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
               or f"sqlite:///{Path('mlflow.db').resolve()}")
        loggers.append(ResumableMLFlowLogger(experiment_name=m.experiment_name, run_name=m.run_name or run_dir.name,
                                             tracking_uri=uri, run_id=ids.get("mlflow")))
    return loggers


def start_loggers(loggers: list[Logger], cfg: TrainConfig, run_dir: Path) -> None:
    """On rank zero, before training: record the W&B and MLflow run ids (a resume continues those
    runs), make env steps W&B's x axis, and log the whole config as hyperparameters."""
    ids = _read_ids(run_dir)
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            run = logger.experiment
            run.define_metric("env_steps")
            run.define_metric("*", step_metric="env_steps", step_sync=True)
            ids["wandb"] = run.id
        elif isinstance(logger, MLFlowLogger):
            ids["mlflow"], ids["mlflow_tracking_uri"] = logger.run_id, logger.experiment.tracking_uri
            log.info("MLflow run %s in experiment %s", logger.run_id, logger.experiment_id)
        logger.log_hyperparams(plain(cfg))
    if ids:
        _write_ids(run_dir, ids)


def log_row(loggers: list[Logger], metrics: Mapping[str, float], update: int) -> None:
    """One row of metrics (holding ``env_steps``) to every logger, against env steps; ``update`` is
    the index of the update the row belongs to (``metrics.csv``'s ``step`` column)."""
    env_steps = int(metrics["env_steps"])
    for logger in loggers:
        if isinstance(logger, MetricsCSV):
            logger.log_metrics(dict(metrics), step=update)
        elif isinstance(logger, WandbLogger):
            logger.log_metrics(dict(metrics))  # x axis: the env_steps metric (define_metric above)
        else:
            logger.log_metrics(dict(metrics), step=env_steps)


def finish_loggers(loggers: list[Logger]) -> None:
    """Flush every logger and end W&B's run (its process would otherwise outlive this run)."""
    for logger in loggers:
        logger.save()
        if isinstance(logger, WandbLogger):
            import wandb

            if wandb.run is not None:
                wandb.finish()
