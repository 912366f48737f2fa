"""One training job: a single run from the command line (composed once, validated once, then run in
its own folder with the logging ``configs/config.yaml`` describes), or a job of a Hydra multirun
(the Hydra task :func:`task`)."""
from __future__ import annotations

import dataclasses
import logging.config
from pathlib import Path
from typing import Any, Optional, Sequence

from omegaconf import DictConfig, OmegaConf

from lightning_marl.cli.compose import compose_checked
from lightning_marl.cli.exits import job_endings, log
from lightning_marl.cli.folders import check_shared_folder, register_resolvers
from lightning_marl.cli.overrides import is_hydra, parse
from lightning_marl.cli.requeue import record_scheduler_job, requeued, shares_console, submitit_ranks
from lightning_marl.cli.resume import ResumePlan, plan_resume, run_config, write_config
from lightning_marl.config import CONFIG_MODULE
from lightning_marl.config.schema import TrainConfig
from lightning_marl.config.validate import to_typed

# a multirun's jobs may run in other processes (joblib, submitit) that unpickle :func:`task` and
# resolve hydra.sweep.dir there: importing this module gives them the resolvers
register_resolvers()


def run_job(typed: TrainConfig, record: DictConfig, session: Path, run_dir: Path,
            plan: Optional[ResumePlan] = None) -> float:
    """Train (or continue ``plan``), with ``record`` (the effective config) written to the session's
    ``.hydra/config.yaml``; returns the final greedy return. Endings: :func:`~.exits.job_endings`."""
    from lightning_marl.experiment import run

    with job_endings(session, run_dir):
        if plan is not None:
            write_config(run_config(plan.cfg), run_dir / ".hydra" / "config.yaml")  # later resumes keep the overrides
        write_config(record, session / ".hydra" / "config.yaml")  # this session's record: the effective config
        result = run(typed, run_dir, ckpt_path=plan.ckpt if plan else None, summary=plan.checkpoint if plan else None)
    final = result["final"]
    if result["is_global_zero"]:
        log.info("final greedy evaluation after %d env steps: %s", result["env_steps"],
                 ", ".join(f"{k}={v:.3f}" for k, v in final.items() if k.startswith("test/")))
        if typed.logger.csv is not None:
            log.info("metrics: %s", result["metrics_csv"])
    return final.get("test/return_mean", float("nan"))


# ----------------------------------------------------------------------------- a single run
def hydra_node(job: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """The ``hydra`` node of ``configs/config.yaml`` (run folder, logging) with this command's
    ``hydra.*`` overrides, resolved against the job's config."""
    from importlib.resources import files

    with files(CONFIG_MODULE).joinpath("config.yaml").open() as f:
        node = OmegaConf.load(f)["hydra"]
    root = OmegaConf.create({**OmegaConf.to_container(job, enum_to_str=True), "hydra": node})
    for o in parse(overrides):
        if is_hydra(o) and "/" not in o.key_or_group:
            OmegaConf.update(root, o.key_or_group, o.value(), force_add=True)
    return root.hydra


def start_session(job: DictConfig, overrides: Sequence[str]) -> Path:
    """Make this session's folder (``hydra.run.dir``: a new run's own folder, or a resumed run's
    ``resumed/<time>``), send the log there as ``configs/config.yaml`` says, and record the
    command's overrides in ``.hydra/overrides.yaml``."""
    node = hydra_node(job, overrides)
    session = Path(node.run.dir)
    node.runtime = {"output_dir": str(session)}
    (session / ".hydra").mkdir(parents=True, exist_ok=True)
    logging.config.dictConfig(OmegaConf.to_container(node.job_logging, resolve=True))
    (session / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(list(overrides))))
    return session


def single(overrides: Sequence[str]) -> float:
    """``train.py key=value ...`` (no multirun): compose and validate once (or plan the resume), and
    only then make the session folder and train. Raises ConfigError before anything is written."""
    resume = next((o.value() for o in parse(overrides) if o.key_or_group == "resume"), None)
    own_folder = any(o.key_or_group == "hydra.run.dir" for o in parse(overrides))
    if resume:
        warnings: list[str] = []  # said once the session's log exists
        plan = plan_resume(str(resume), overrides, warn=warnings.append)
        check_shared_folder(plan.typed.trainer.num_nodes, own_folder)
        session = start_session(plan.cfg, overrides)
        for text in warnings:
            log.warning(text)
        return run_job(plan.typed, plan.cfg, session, plan.run_dir, plan)
    cfg, typed = compose_checked(overrides)
    check_shared_folder(typed.trainer.num_nodes, own_folder)
    session = start_session(cfg, overrides)
    return run_job(typed, cfg, session, session)


# ----------------------------------------------------------------------------- a multirun's job
def task(cfg: DictConfig) -> Any:
    """The Hydra task of a multirun job (its config composed by Hydra; the sweep was checked before
    launch): validated once here, then trained in Hydra's job folder (or its own run continued)."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    session = Path(hydra_cfg.runtime.output_dir)
    overrides = list(hydra_cfg.overrides.task)
    plan = None
    # this sweep's jobs run in parallel on one console (hydra/launcher=joblib): no progress bars
    quiet = shares_console(hydra_cfg)
    with job_endings(session, session):
        if cfg.resume:
            plan = plan_resume(str(cfg.resume), overrides, warn=log.warning)
        elif requeued(session):
            # this job ran before and was stopped (a cluster job requeued after a time limit or a
            # pre-emption): continue its run from its checkpoint, with its own config
            plan = plan_resume(str(session), [], warn=log.warning)
            log.info("continuing this job's run from %s (the job was started before and requeued)", plan.ckpt)
        else:
            if quiet and cfg.trainer.enable_progress_bar:
                cfg.trainer.enable_progress_bar = False
                log.info("progress bar off: this sweep's jobs run in parallel on one console (hydra/launcher=joblib)")
            typed = to_typed(cfg)
        submitit_ranks((plan.typed if plan is not None else typed).trainer)  # each task of the job one rank
        if plan is None:
            record_scheduler_job(session)
    if plan is not None:  # a requeued job's record describes its run itself (no resume key)
        typed = plan.typed
        if quiet and typed.trainer.enable_progress_bar:  # (the run's saved config keeps its own setting)
            typed = dataclasses.replace(typed, trainer=dataclasses.replace(typed.trainer, enable_progress_bar=False))
        return run_job(typed, plan.cfg if cfg.resume else run_config(plan.cfg), session, plan.run_dir, plan)
    return run_job(typed, cfg, session, session)
