"""``lightning-marl-train`` (and ``python train.py`` in a checkout): Hydra entry point for training.

    lightning-marl-train env=box_pushing mixer=qfix_sum seed=3
    lightning-marl-train resume=<run folder or .ckpt> [key=value ...]

Before Hydra creates a run folder, the command line is checked (:func:`preflight`): a refused value
prints one line ``error: <key>=<value> ...; allowed: ...`` and exits with code 2, leaving nothing on
disk. A multirun checks every combination of its sweep first.

Resuming: the run's saved config (``<run>/.hydra/config.yaml``) with this command's plain
``key=value`` overrides on top, checked against the run's own schema (its env and mixer), is the
run's effective config; it is written back to the run, so a later resume keeps the overrides.
"""
from __future__ import annotations

import itertools
import logging
import os
import shutil
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from omegaconf import DictConfig, OmegaConf

from lightning_marl.checkpoint_files import CheckpointError, architecture_differences, choose_checkpoint
from lightning_marl.config import CONFIG_MODULE, compose, plain
from lightning_marl.config.migrate import saved_config
from lightning_marl.config.schema import ENV_SCHEMAS, LOGGERS, MIXER_SCHEMAS, TRAINERS, TrainConfig
from lightning_marl.config.validate import from_omegaconf, refuse, show, to_typed
from lightning_marl.errors import ConfigError, DivergenceError, Interrupted

GROUPS = ("env", "mixer", "trainer", "logger", "experiment")
# Hydra's own flags that do not start a run: no check, Hydra answers them
INFO_FLAGS = ("-h", "--help", "--hydra-help", "-c", "--cfg", "-i", "--info", "-sc", "--shell-completion", "--version")
SWEEP_CHECK_LIMIT = 512
EXIT_CONFIG, EXIT_DIVERGED = 2, 3
log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- run folders
_MADE: dict[str, str] = {}


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
    """Hydra's folder for this session (its log and composed config): a new run's own folder, or for
    ``resume=`` a ``resumed/<time>`` folder inside the resumed run's folder (so one run stays one folder)."""
    if not resume:
        return unique_dir(new_run_dir)
    try:
        run_folder, _ = find_checkpoint(str(resume))
    except ConfigError:  # refused by the preflight before Hydra gets here
        return unique_dir(new_run_dir)
    return unique_dir(str(run_folder / "resumed" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")))


SWEEP_DIR_ENV = "LIGHTNING_MARL_SWEEP_DIR"


def sweep_dir(path: str) -> str:
    """A multirun's folder, made once (:func:`unique_dir`) by the process that launches the sweep and
    handed to its jobs through the environment: jobs that run in other processes (joblib, submitit,
    a requeued cluster job) resolve ``hydra.sweep.dir`` again, later, and must land in the same folder."""
    made = os.environ.get(SWEEP_DIR_ENV)
    if not made:
        made = os.environ[SWEEP_DIR_ENV] = unique_dir(path)
    return made


OmegaConf.register_new_resolver("session_dir", session_dir, replace=True)
OmegaConf.register_new_resolver("sweep_dir", sweep_dir, replace=True)
OmegaConf.register_new_resolver("unique_dir", unique_dir, replace=True)


# ----------------------------------------------------------------------------- overrides
def parse(overrides: Sequence[str]) -> list:
    """Hydra's own parse of ``key=value`` overrides (a syntax error is refused with Hydra's words)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    parsed = []
    for override in overrides:
        try:
            parsed += parser.parse_overrides([override])
        except OverrideParseException as err:
            why = str(err).strip().splitlines()[0]
            raise ConfigError(f"{override} cannot be parsed ({why}); allowed: key=value in Hydra's override "
                              "syntax (quote lists and strings with brackets: 'env.payoff=[[1,0],[0,1]]')") from None
    return parsed


def _raw(override) -> str:
    return override.input_line.split("=", 1)[1] if "=" in override.input_line else ""


def _is_hydra(override) -> bool:
    key = override.key_or_group
    return key == "hydra" or key.startswith("hydra.") or key.startswith("hydra/")


def experiment_names() -> list[str]:
    from importlib.resources import files

    root = files(CONFIG_MODULE).joinpath("experiment")
    names: list[str] = []

    def walk(node, prefix: str) -> None:
        for child in node.iterdir():
            if child.is_dir():
                walk(child, f"{prefix}{child.name}/")
            elif child.name.endswith(".yaml") and child.name != "common.yaml":
                names.append(prefix + child.name[:-5])

    walk(root, "")
    return sorted(names)


def check_group_choices(parsed: list) -> None:
    """``group=option`` with an option that does not exist, named with the list of options."""
    options = {"env": list(ENV_SCHEMAS), "mixer": list(MIXER_SCHEMAS), "trainer": list(TRAINERS),
               "logger": list(LOGGERS)}
    for o in parsed:
        group = o.key_or_group.lstrip("/")
        if group not in GROUPS or o.is_delete() or o.is_sweep_override():
            continue
        allowed = options[group] if group in options else experiment_names()
        value = o.value()
        chosen = value if isinstance(value, list) and group == "logger" else [] if value is None else [value]
        if group == "logger" and isinstance(value, list) and not value:
            raise refuse("logger", "[]", "at least one of " + ", ".join(options["logger"]) + " (logger=[csv,wandb])",
                         "chooses no logger")
        for one in chosen:
            if str(one) not in allowed:
                raise refuse(group, one, ", ".join(allowed) + (" (several as a list: logger=[csv,wandb])"
                                                               if group == "logger" else ""), "is not an option")


def combinations(overrides: Sequence[str]) -> list[list[str]]:
    """Every job of a multirun sweep (``seed=0,1 mixer=vdn,qmix`` -> 4 override lists)."""
    choices = []
    for o in parse(overrides):
        if o.is_sweep_override():
            key = o.input_line.split("=", 1)[0]
            choices.append([f"{key}={v}" for v in o.sweep_string_iterator()])
        else:
            choices.append([o.input_line])
    jobs = [list(job) for job in itertools.islice(itertools.product(*choices), SWEEP_CHECK_LIMIT)]
    return jobs or [[]]


def compose_checked(overrides: Sequence[str]) -> tuple[DictConfig, TrainConfig]:
    """The composed config of a new run and its typed, checked form."""
    parsed = [o for o in parse(overrides) if not _is_hydra(o)]
    check_group_choices(parsed)
    raw = {o.key_or_group: _raw(o) for o in parsed}
    try:
        cfg = compose([o.input_line for o in parsed])
    except Exception as err:  # Hydra's composition errors (types, unknown keys)
        choice = next((o.value() for o in parsed if o.key_or_group.lstrip("/") == "logger"), "csv")
        chosen = {str(c) for c in (choice if isinstance(choice, list) else [choice])}
        for key, value in raw.items():  # an option of a logger that is not chosen (its node is null)
            parts = key.split(".")
            if len(parts) > 2 and parts[0] == "logger" and parts[1] in LOGGERS and parts[1] not in chosen:
                raise refuse(key, value, f"choose the logger too: logger=[csv,{parts[1]}]",
                             f"sets an option of logger {parts[1]}, which this run does not use") from None
        raise from_omegaconf(err, raw) from None
    values = [(o.key_or_group, o.value()) for o in parsed if o.key_or_group not in GROUPS and not o.is_delete()]
    return cfg, to_typed(cfg, values)


# ----------------------------------------------------------------------------- resume
def resumed_config(resume: str, overrides: Sequence[str],
                   warn: Optional[Callable[[str], None]] = None) -> tuple[DictConfig, TrainConfig, Path, Path]:
    """The run's effective config: its saved config (in today's layout) with ``overrides`` on top,
    checked against the run's own schema and its checkpoint's architecture. The checkpoint is the
    run's ``last.ckpt``, or where that is unreadable the newest readable periodic one (``warn`` says
    so). Returns (config, typed config, run folder, checkpoint)."""
    run_dir, ckpt = find_checkpoint(resume)
    ckpt, state = choose_checkpoint(ckpt, warn)
    saved_file = run_dir / ".hydra" / "config.yaml"
    if not saved_file.is_file():
        raise ConfigError(f"resume={resume} has no .hydra/config.yaml; allowed: a folder written by train.py")
    try:
        cfg = saved_config(saved_file)
    except ConfigError as err:
        raise ConfigError(f"resume={resume}: {err}") from None
    except Exception as err:
        raise from_omegaconf(err) from None
    env, mixer = cfg.env.name, cfg.mixer.name
    values = []
    for o in parse(overrides):
        if _is_hydra(o) or o.key_or_group == "resume":
            continue
        key = o.key_or_group
        if key.lstrip("/") in GROUPS:
            raise refuse(key, o.value(), "plain key=value overrides such as total_env_steps=200000 when resuming",
                         "changes a config group of a resumed run")
        if o.is_sweep_override() or o.is_delete():
            raise refuse(key, _raw(o), "one plain value per key when resuming", "is not a plain override")
        if not o.is_add() and OmegaConf.select(cfg, key, default="__absent__") == "__absent__":
            parent = key.rsplit(".", 1)[0] if "." in key else ""
            node = OmegaConf.select(cfg, parent) if parent else cfg
            names = [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []
            label = {"env": env, "mixer": mixer}.get(parent, parent)
            where = f" of {parent} ({label})" if parent else ""
            raise refuse(key, _raw(o), ", ".join(n for n in names if n != "name"),
                         f"is not an option{where} of this run")
        try:
            OmegaConf.update(cfg, key, o.value(), merge=True, force_add=o.is_add())
        except Exception as err:
            raise from_omegaconf(err, {key: _raw(o)}) from None
        values.append((key, o.value()))
    cfg.resume = str(resume)
    typed = to_typed(cfg, values)
    differences = architecture_differences(state["hyper_parameters"], {"agent": plain(typed.agent),
                                                                       "mixer": plain(typed.mixer)})
    if differences:
        raise CheckpointError(f"resume={resume}: its checkpoint {ckpt} was trained with another architecture "
                              f"({'; '.join(differences)}); allowed: overrides that keep the agent and mixer")
    return cfg, typed, run_dir, ckpt


def write_config(cfg: DictConfig, path: Path) -> None:
    """Write ``cfg`` as YAML atomically (a crash leaves the old file or the new one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(OmegaConf.to_yaml(cfg))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def run_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` as the run's saved config (no ``resume`` key set: it describes the run itself)."""
    out = OmegaConf.create(OmegaConf.to_container(cfg, enum_to_str=True))
    out.resume = None
    return out


# ----------------------------------------------------------------------------- entry
# launchers from Hydra plugins (hydra/launcher=...): the module each needs and the extra installing it
LAUNCHER_PLUGINS = {"joblib": ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher"),
                    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
                    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
                    "slurm": ("hydra_plugins.hydra_submitit_launcher", "slurm")}


def check_launcher(overrides: Sequence[str]) -> None:
    """``hydra/launcher=X`` whose plugin is not installed, refused with the line that installs it."""
    import importlib.util

    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+/") != "hydra/launcher" or value not in LAUNCHER_PLUGINS:
            continue
        module, extra = LAUNCHER_PLUGINS[value]
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            install = f"pip install '{extra}'" if "-" in extra else f"pip install 'lightning_marl[{extra}]'"
            raise ConfigError(f"hydra/launcher={value} needs a Hydra plugin that is not installed; allowed: install "
                              f"it ({install}), or hydra/launcher=basic (one run after another)")


def preflight(argv: Sequence[str]) -> None:
    """Check the command line before Hydra runs anything (raises ConfigError)."""
    if any(a in INFO_FLAGS or a.split("=", 1)[0] in INFO_FLAGS for a in argv):
        return
    overrides = [a for a in argv if not a.startswith("-")]
    check_launcher(overrides)
    multirun = "-m" in argv or "--multirun" in argv
    jobs = combinations(overrides) if multirun else [overrides]
    for job in jobs:
        resume = next((o.value() for o in parse(job) if o.key_or_group == "resume"), None)
        if resume:
            resumed_config(str(resume), job)
        else:
            compose_checked(job)


def remove_session_folder(session: Path) -> None:
    """Remove this session's folder if it holds nothing but what Hydra wrote into it (its config
    record and log): a folder the user pointed ``hydra.run.dir`` at that holds anything else stays."""
    if session.is_dir() and {p.name for p in session.iterdir()} <= {".hydra", "train.log"}:
        shutil.rmtree(session, ignore_errors=True)


SCHEDULER_JOB_FILE = "scheduler_job.json"


def shares_console(hydra_cfg) -> bool:
    """Whether this job runs beside others that print to the same console (the joblib launcher),
    where progress bars would overwrite each other's lines."""
    return "joblib" in str(hydra_cfg.launcher.get("_target_", "")).lower()


def requeued(session: Path) -> bool:
    """Whether this multirun job continues a run it started before: the job folder holds a checkpoint
    and the scheduler job that wrote it (submitit's job id, kept by SLURM across a requeue) is this
    one. A folder holding another job's run is refused: a sweep never trains over an old run."""
    import json

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
    import json

    from hydra.core.hydra_config import HydraConfig

    if os.environ.get("SUBMITIT_EXECUTOR"):
        (session / SCHEDULER_JOB_FILE).write_text(json.dumps({"job_id": str(HydraConfig.get().job.id)}))


def _task(cfg: DictConfig) -> float:
    """The Hydra task: train one run in Hydra's output folder (or continue a resumed one)."""
    from hydra.core.hydra_config import HydraConfig

    from lightning_marl.experiment import run

    hydra_cfg = HydraConfig.get()
    session = Path(hydra_cfg.runtime.output_dir)
    overrides = list(hydra_cfg.overrides.task)
    try:
        if cfg.resume:
            cfg, typed, run_dir, ckpt = resumed_config(str(cfg.resume), overrides,
                                                       warn=log.warning)
            write_config(run_config(cfg), run_dir / ".hydra" / "config.yaml")  # later resumes keep the overrides
        elif requeued(session):
            # this job ran before and was stopped (a cluster job requeued after a time limit or a
            # pre-emption): continue its run from its checkpoint, with its own config
            cfg, typed, run_dir, ckpt = resumed_config(str(session), [], warn=log.warning)
            cfg.resume = None
            log.info("continuing this job's run from %s (the job was started before and requeued)", ckpt)
        else:
            if shares_console(hydra_cfg) and cfg.trainer.enable_progress_bar:
                cfg.trainer.enable_progress_bar = False
                log.info("progress bar off: this sweep's jobs run in parallel on one console (hydra/launcher=joblib)")
            typed = to_typed(cfg)
            run_dir, ckpt = session, None
            record_scheduler_job(session)
        write_config(cfg, session / ".hydra" / "config.yaml")  # this session's record: the effective config
        result = run(typed, run_dir, ckpt_path=ckpt)
    except ConfigError as err:
        log.error("error: %s", err)
        logging.shutdown()  # close train.log before its folder goes
        remove_session_folder(session)  # a refused config leaves nothing behind
        sys.exit(EXIT_CONFIG)
    except DivergenceError as err:
        log.error("error: %s; the last good checkpoint is in %s", err, Path(run_dir) / "checkpoints")
        sys.exit(EXIT_DIVERGED)
    except Interrupted as err:
        log.warning("%s", err)
        if err.hand_back is not None:  # the scheduler's own handler, now that the checkpoint is written
            logging.shutdown()  # (submitit's requeues the job and exits)
            err.hand_back(err.signum, None)
        sys.exit(128 + err.signum)
    final = result["final"]
    if result["is_global_zero"]:
        log.info("final greedy evaluation after %d env steps: %s", result["env_steps"],
                 ", ".join(f"{k}={v:.3f}" for k, v in final.items() if k.startswith("test/")))
        if typed.logger.csv is not None:
            log.info("metrics: %s", result["metrics_csv"])
    return final.get("test/return_mean", float("nan"))


def logger_lists(argv: Sequence[str]) -> list[str]:
    """``logger=csv,wandb`` means both loggers: outside a multirun (where commas sweep), Hydra's list
    syntax ``logger=[csv,wandb]`` is what the user meant."""
    if "-m" in argv or "--multirun" in argv:
        return list(argv)
    return [f"{a.split('=', 1)[0]}=[{a.split('=', 1)[1]}]"
            if a.split("=", 1)[0].lstrip("/") == "logger" and "," in a and "[" not in a else a for a in argv]


def train(argv: Optional[Sequence[str]] = None) -> Any:
    """Console entry point ``lightning-marl-train``."""
    import hydra

    argv = logger_lists(sys.argv[1:] if argv is None else argv)
    os.environ.pop(SWEEP_DIR_ENV, None)  # a new command: its multirun (if any) gets a new folder
    try:
        preflight(argv)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    sys.argv = [sys.argv[0], *argv]
    main = hydra.main(config_path="pkg://" + CONFIG_MODULE, config_name="config", version_base="1.3")(_task)
    return main()


__all__ = ["find_checkpoint", "preflight", "resumed_config", "show", "train", "unique_dir"]


if __name__ == "__main__":  # python -m lightning_marl.cli (the study runner starts runs this way)
    train()
