"""Resuming a run: its saved config with this command's plain ``key=value`` overrides on top, checked
once against the run's own schema, and its checkpoint, read once: a :class:`ResumePlan` that the
job hands to :func:`lightning_marl.experiment.run`."""
from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from omegaconf import DictConfig, OmegaConf

from lightning_marl.checkpoint_files import (
    CheckpointError,
    CheckpointSummary,
    architecture_differences,
    check_world_size,
    choose_checkpoint,
)
from lightning_marl.cli.folders import find_checkpoint
from lightning_marl.cli.overrides import GROUPS, is_hydra, parse, raw
from lightning_marl.config.migrate import saved_config
from lightning_marl.config.schema import TrainConfig, plain
from lightning_marl.config.validate import from_omegaconf, to_typed
from lightning_marl.errors import ConfigError, refuse


@dataclasses.dataclass(frozen=True)
class ResumePlan:
    """What a resumed session continues: the run's effective config (composed and typed), its folder,
    the checkpoint chosen and what the run reads from it before training (read once)."""

    cfg: DictConfig
    typed: TrainConfig
    run_dir: Path
    ckpt: Path
    checkpoint: CheckpointSummary


def plan_resume(resume: str, overrides: Sequence[str], warn: Optional[Callable[[str], None]] = None) -> ResumePlan:
    """The run's effective config: its saved config (in today's layout) with ``overrides`` on top,
    checked against the run's own schema and its checkpoint's architecture. The checkpoint is the
    run's ``last.ckpt``, or where that is unreadable the newest readable periodic one (``warn`` says
    so). Raises ConfigError (or CheckpointError)."""
    run_dir, ckpt = find_checkpoint(resume)
    ckpt, state = choose_checkpoint(ckpt, warn)
    summary = CheckpointSummary.of(state)
    del state  # (it maps the whole file: see CheckpointSummary)
    saved_file = run_dir / ".hydra" / "config.yaml"
    if not saved_file.is_file():
        raise ConfigError(f"resume={resume} has no .hydra/config.yaml; allowed: a folder written by train.py")
    try:
        cfg = saved_config(saved_file)
    except ConfigError as err:
        raise ConfigError(f"resume={resume}: {err}") from None
    except Exception as err:
        raise from_omegaconf(err) from None
    values = apply_overrides(cfg, overrides)
    cfg.resume = str(resume)
    typed = to_typed(cfg, values)
    differences = architecture_differences(summary.hyper_parameters, {"agent": plain(typed.agent),
                                                                       "mixer": plain(typed.mixer)})
    if differences:
        raise CheckpointError(f"resume={resume}: its checkpoint {ckpt} was trained with another architecture "
                              f"({'; '.join(differences)}); allowed: overrides that keep the agent and mixer")
    check_world_size(ckpt, summary.world_size, typed.trainer.devices * typed.trainer.num_nodes)
    return ResumePlan(cfg, typed, run_dir, ckpt, summary)


def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> list[tuple[str, Any]]:
    """Put this command's plain ``key=value`` overrides onto the run's saved ``cfg`` (in place);
    returns them as (key, value) for the validation. Config groups, sweeps and deletions are refused."""
    env, mixer = cfg.env.name, cfg.mixer.name
    values = []
    for o in parse(overrides):
        if is_hydra(o) or o.key_or_group == "resume":
            continue
        key = o.key_or_group
        if key.lstrip("/") in GROUPS:
            raise refuse(key, o.value(), "plain key=value overrides such as total_env_steps=200000 when resuming",
                         "changes a config group of a resumed run")
        if o.is_sweep_override() or o.is_delete():
            raise refuse(key, raw(o), "one plain value per key when resuming", "is not a plain override")
        if not o.is_add() and OmegaConf.select(cfg, key, default="__absent__") == "__absent__":
            parent = key.rsplit(".", 1)[0] if "." in key else ""
            node = OmegaConf.select(cfg, parent) if parent else cfg
            names = [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []
            label = {"env": env, "mixer": mixer}.get(parent, parent)
            where = f" of {parent} ({label})" if parent else ""
            raise refuse(key, raw(o), ", ".join(n for n in names if n != "name"),
                         f"is not an option{where} of this run")
        try:
            OmegaConf.update(cfg, key, o.value(), merge=True, force_add=o.is_add())
        except Exception as err:
            raise from_omegaconf(err, {key: raw(o)}) from None
        values.append((key, o.value()))
    return values


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
