"""Run folders: a new run's own folder, a resumed run's session folder inside it, a multirun's folder;
the OmegaConf resolvers that ``configs/config.yaml`` names them with."""
from __future__ import annotations

import itertools
import os
from datetime import datetime
from pathlib import Path
from typing import Optional

from omegaconf import OmegaConf

from lightning_marl.errors import ConfigError

_MADE: dict[str, str] = {}
SWEEP_DIR_ENV = "LIGHTNING_MARL_SWEEP_DIR"
SESSION_DIR_ENV = "LIGHTNING_MARL_SESSION_DIR"


def unique_dir(path: str) -> str:
    """Create ``path`` (or ``path-2``, ``path-3``, ... when another run took it, e.g. started in the
    same second) and return it: ``mkdir`` without ``exist_ok`` is atomic, so two processes never
    get the same folder. Memoized, since Hydra may read the interpolation more than once."""
    if path in _MADE:
        return _MADE[path]
    for i in itertools.count(1):
        candidate = path if i == 1 else f"{path}-{i}"
        try:
            Path(candidate).parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(candidate)
        except FileExistsError:
            continue
        _MADE[path] = candidate
        return candidate
    raise AssertionError("unreachable")


def find_checkpoint(resume: str) -> tuple[Path, Path]:
    """(run folder, checkpoint file) from a checkpoint path or a run folder (its last.ckpt)."""
    path = Path(resume).expanduser()
    if path.is_dir():
        ckpt = path / "checkpoints" / "last.ckpt"
        if not ckpt.is_file():
            raise ConfigError(f"resume={resume} has no checkpoints/last.ckpt; allowed: a run folder "
                              "with checkpoints/last.ckpt, or a .ckpt file")
        return path, ckpt
    if path.is_file():
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        return run_dir, path
    raise ConfigError(f"resume={resume} does not exist; allowed: a run folder or a .ckpt file")


def session_dir(resume: Optional[str], new_run_dir: str) -> str:
    """This session's folder (its log and composed config): a new run's own folder, or for
    ``resume=`` a ``resumed/<time>`` folder inside the resumed run's folder (so one run stays one folder).

    A DDP rank that Lightning's launcher started (the same command again, ``LOCAL_RANK`` > 0) takes
    the folder of the process that started it, handed over in the environment."""
    inherited = os.environ.get(SESSION_DIR_ENV)
    if inherited and int(os.environ.get("LOCAL_RANK") or 0) > 0:
        return inherited
    folder = new_run_dir
    if resume:
        try:
            run_folder, _ = find_checkpoint(str(resume))
            folder = str(run_folder / "resumed" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))
        except ConfigError:  # refused by the resume plan before anything is written
            pass
    made = unique_dir(folder)
    os.environ[SESSION_DIR_ENV] = made
    return made


def started_elsewhere() -> bool:
    """Whether this process is one of several that torchrun or SLURM started with the same command."""
    return bool(os.environ.get("TORCHELASTIC_RUN_ID")) or int(os.environ.get("SLURM_NTASKS") or 1) > 1


def check_shared_folder(num_nodes: int, overrides_run_dir: bool) -> None:
    """Processes started separately (several nodes, torchrun, srun) each name the run folder: they
    agree only on one given explicitly (the default holds the start time and a suffix per process)."""
    if (num_nodes > 1 or started_elsewhere()) and not overrides_run_dir:
        raise ConfigError("hydra.run.dir is not set: a run whose processes start separately (trainer.num_nodes > 1, "
                          "torchrun, srun) needs one folder for all of them; allowed: hydra.run.dir=<folder>, the "
                          "same in every process's command")


def sweep_dir(path: str) -> str:
    """A multirun's folder, made once (:func:`unique_dir`) by the process that launches the sweep and
    handed to its jobs through the environment: jobs that run in other processes (joblib, submitit,
    a requeued cluster job) resolve ``hydra.sweep.dir`` again, later, and must land in the same folder."""
    made = os.environ.get(SWEEP_DIR_ENV)
    if not made:
        made = os.environ[SWEEP_DIR_ENV] = unique_dir(path)
    return made


def register_resolvers() -> None:
    """The resolvers ``configs/config.yaml`` uses for ``hydra.run.dir`` and ``hydra.sweep.dir``."""
    OmegaConf.register_new_resolver("session_dir", session_dir, replace=True)
    OmegaConf.register_new_resolver("sweep_dir", sweep_dir, replace=True)
    OmegaConf.register_new_resolver("unique_dir", unique_dir, replace=True)
    if not OmegaConf.has_resolver("now"):  # Hydra's own, registered when Hydra composes (a resume does not)
        OmegaConf.register_new_resolver("now", lambda pattern: datetime.now().strftime(pattern), use_cache=True)
