"""Cluster jobs (submitit, SLURM): a requeued job continues its own run in its own folder; a sweep
never trains over another job's run."""
from __future__ import annotations

import json
import os
from pathlib import Path

from lightning_marl.errors import ConfigError

SCHEDULER_JOB_FILE = "scheduler_job.json"


def requeued(session: Path) -> bool:
    """Whether this multirun job continues a run it started before: the job folder holds a checkpoint
    and the scheduler job that wrote it (submitit's job id, kept by SLURM across a requeue) is this
    one. A folder holding another job's run is refused: a sweep never trains over an old run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN or not (session / "checkpoints" / "last.ckpt").is_file():
        return False
    record = session / SCHEDULER_JOB_FILE
    job = json.loads(record.read_text()).get("job_id") if record.is_file() else None
    if os.environ.get("SUBMITIT_EXECUTOR") and job is not None and job == str(hydra_cfg.job.id):
        return True
    raise ConfigError(f"hydra.sweep.dir: the job folder {session} holds a run already (checkpoints/last.ckpt); "
                      f"allowed: a new sweep folder (hydra.sweep.dir left to its default), or resume={session} "
                      "to continue that run")


def record_scheduler_job(session: Path) -> None:
    """Under submitit, note the scheduler job that runs in this folder (see :func:`requeued`)."""
    from hydra.core.hydra_config import HydraConfig

    if os.environ.get("SUBMITIT_EXECUTOR"):
        (session / SCHEDULER_JOB_FILE).write_text(json.dumps({"job_id": str(HydraConfig.get().job.id)}))


def shares_console(hydra_cfg) -> bool:
    """Whether this job runs beside others that print to the same console (the joblib launcher),
    where progress bars would overwrite each other's lines."""
    return "joblib" in str(hydra_cfg.launcher.get("_target_", "")).lower()
