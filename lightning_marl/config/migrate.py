"""Configs saved by older versions, read by this one (a run's ``config.yaml`` and a checkpoint's
hyperparameters; nothing else is migrated): keys that moved or changed type are carried
to where they live now, with the value they had then. Keys that are new get the schema's default,
except where the default changed the run's behaviour (those get the old behaviour back)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lightning_marl.config.schema import (
    AgentConfig,
    DataConfig,
    LearnerConfig,
    LoggerConfig,
    TrainConfig,
    TrainerConfig,
)
from lightning_marl.errors import ConfigError
from lightning_marl.registry import ENVS, MIXERS

# env.parallel (true / false / auto) became data.env_workers
_WORKERS = {True: "processes", False: "in_process", "auto": "auto"}


def migrate_learner(learner: dict[str, Any]) -> dict[str, Any]:
    out = dict(learner)
    if isinstance(out.get("compile"), bool):  # false | true (inductor) became null | a backend name
        out["compile"] = "inductor" if out["compile"] else None
    out.setdefault("td_loss_scale", 1.0)  # older versions minimized the plain mean squared TD error
    return out


def migrate_mixer(mixer: dict[str, Any]) -> dict[str, Any]:
    out = dict(mixer)
    if out.get("name") in MIXERS and not MIXERS.config(out["name"]).needs_central:
        # VDN's config carried an unused central_info (and its options)
        out = {k: v for k, v in out.items() if k not in ("central_info", "noise_dim", "detach_history")}
    return out


# env options of older versions that moved to other nodes (data.env_workers, data.start_method,
# learner.shaping_anneal_steps; see migrate_config)
MOVED_ENV_KEYS = ("parallel", "start_method", "shaping_anneal_steps")


def migrate_env(env: dict[str, Any]) -> dict[str, Any]:
    """A saved env config (e.g. a checkpoint's record of its games) with only today's env options."""
    return {k: v for k, v in env.items() if k not in MOVED_ENV_KEYS}


def saved_module_configs(agent: dict[str, Any], mixer: dict[str, Any], learner: dict[str, Any]) -> tuple:
    """A saved run's agent, mixer and learner configs (plain values, any layout this version reads)
    as today's typed configs."""
    from lightning_marl.config.validate import typed_options

    mixer = migrate_mixer(dict(mixer))
    return (typed_options(AgentConfig, "agent.", **dict(agent)),
            typed_options(MIXERS.config(mixer["name"]), "mixer.", **mixer),
            typed_options(LearnerConfig, "learner.", **migrate_learner(dict(learner))))


def migrate_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """A whole saved ``config.yaml`` (as plain containers) in today's layout."""
    cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in cfg.items()}
    env, data, learner = cfg.get("env", {}), cfg.setdefault("data", {}), cfg.setdefault("learner", {})
    if "parallel" in env:
        data.setdefault("env_workers", _WORKERS.get(env.pop("parallel"), "auto"))
    if "start_method" in env:
        method = env.pop("start_method")
        if method is not None:
            data.setdefault("start_method", method)
    if "worker_start_method" in data:
        method = data.pop("worker_start_method")
        if method is not None:
            data["start_method"] = method
    if data.pop("async_collection", False) and not data.get("collector_processes"):
        # the collector thread became TorchRL's worker processes: one game per process where the
        # thread stepped games in worker processes, else one process with all the games
        in_processes = data.get("env_workers") == "processes"
        data["collector_processes"] = data.get("num_envs", DataConfig.num_envs) if in_processes else 1
    if "shaping_anneal_steps" in env:
        steps = env.pop("shaping_anneal_steps")
        shaped = env.get("name") in ENVS and ENVS.config(env["name"]).shaped_reward
        learner.setdefault("shaping_anneal_steps", steps if shaped else 0)
    logger = cfg.get("logger")
    if isinstance(logger, dict) and "kind" in logger:  # logger.kind=csv|tensorboard|both -> one field per logger
        kind = logger.pop("kind")
        cfg["logger"] = {name: {} for name in ("csv", "tensorboard") if kind in (name, "both")}
    cfg["learner"] = migrate_learner(learner)
    if "mixer" in cfg:
        cfg["mixer"] = migrate_mixer(cfg["mixer"])
    cfg.pop("hydra", None)
    return cfg


def on_schema(cfg: dict[str, Any]) -> DictConfig:
    """A config (plain containers, any layout this version reads) in today's layout, merged onto the
    schema of its env and mixer (keys newer than the config get their defaults). Raises
    :class:`ConfigError` for an env or mixer this version does not have, and lets OmegaConf's merge
    errors through (the caller words them)."""
    cfg = migrate_config(cfg)
    env, mixer = (cfg[group]["name"] if isinstance(cfg.get(group), dict) and "name" in cfg[group] else None
                  for group in ("env", "mixer"))
    if env not in ENVS or mixer not in MIXERS:
        raise ConfigError(f"the saved config has env={env}, mixer={mixer}; allowed: "
                          f"env {', '.join(ENVS.names())}; mixer {', '.join(MIXERS.names())}")
    base = OmegaConf.structured(TrainConfig)
    base.env, base.mixer = ENVS.config(env)(), MIXERS.config(mixer)()
    base.trainer, base.logger = TrainerConfig(), LoggerConfig()
    return OmegaConf.merge(base, cfg)


def saved_config(path: Path) -> DictConfig:
    """A run's saved ``config.yaml`` (read as data, so any older layout) through :func:`on_schema`."""
    return on_schema(OmegaConf.to_container(OmegaConf.load(path)))
