"""Cluster jobs (submitit, SLURM): a requeued job continues its own run in its own folder; a sweep
never trains over another job's run; each task of a job is one DDP rank."""
from __future__ import annotations

import json
import os
from pathlib import Path

from lightning_marl.errors import ConfigError, refuse

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


def submitit_ranks(trainer) -> None:
    """Under submitit, every task of a job is one DDP rank (``hydra.launcher.tasks_per_node`` tasks on
    each of ``hydra.launcher.nodes`` nodes), so ``trainer`` (the run's TrainerConfig) must ask for as
    many ranks per node and nodes; anything else is refused (exit 2) before Lightning starts.

    Under SLURM, Lightning reads each task's rank from SLURM's variables. Submitit's local executor
    tells its tasks their ranks only in its own variables (``SUBMITIT_LOCAL_*``), which Lightning
    does not read: it would take every task for a rank 0 and start another rank of its own in each.
    There, the ranks submitit reports are exported as torch.distributed's variables (MASTER_ADDR,
    MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK; NODE_RANK for Lightning) before Lightning starts, and
    Lightning takes the tasks as processes started for it. ``CUDA_VISIBLE_DEVICES`` is kept: each rank
    takes the GPU of its local rank among those the job sees (``hydra.launcher.gpus_per_node``)."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return
    import submitit
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    job = submitit.JobEnvironment()
    per_node = job.num_tasks // job.num_nodes
    if trainer.devices != per_node:
        raise refuse("trainer.devices", trainer.devices, f"trainer.devices={per_node}, or "
                     f"hydra.launcher.tasks_per_node={trainer.devices}",
                     f"is not this submitit job's number of tasks per node ({per_node}; each task is one rank)")
    if trainer.num_nodes != job.num_nodes:
        raise refuse("trainer.num_nodes", trainer.num_nodes, f"trainer.num_nodes={job.num_nodes}, or "
                     f"hydra.launcher.nodes={trainer.num_nodes}", f"is not this submitit job's number of nodes "
                     f"({job.num_nodes})")
    if job.num_tasks > 1 and not SLURMEnvironment.detect():
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        os.environ["NODE_RANK"] = str(job.node)


def shares_console(hydra_cfg) -> bool:
    """Whether this job runs beside others that print to the same console (the joblib launcher),
    where progress bars would overwrite each other's lines."""
    return "joblib" in str(hydra_cfg.launcher.get("_target_", "")).lower()
