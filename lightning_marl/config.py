"""Checks of config values, each failing with a message that names the value and what is allowed."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from omegaconf import DictConfig

from lightning_marl.envs import ENVS, env_options
from lightning_marl.models.agent import TORSOS
from lightning_marl.models.central import MODES
from lightning_marl.models.mixers import MIXERS
from lightning_marl.registry import ConfigError, check

# (dotted key, predicate, what is allowed)
RULES: list[tuple[str, Callable[[Any], bool], str]] = [
    ("seed", lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
    ("total_env_steps", lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    ("data.num_envs", lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    ("data.buffer_size", lambda v: isinstance(v, int) and v >= 1, "an integer >= 1 (episodes)"),
    ("data.batch_size", lambda v: isinstance(v, int) and v >= 1, "an integer >= 1 (episodes)"),
    ("data.updates_per_round", lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    ("data.collector_processes", lambda v: isinstance(v, int) and v >= 0, "an integer >= 0 (0 = collect in-process)"),
    ("data.worker_start_method", lambda v: v in (None, "spawn", "fork", "forkserver"), "null, spawn, fork or forkserver"),
    ("data.prioritized", lambda v: isinstance(v, bool), "true or false"),
    ("data.priority_alpha", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0,
     "a number >= 0 (0 = uniform)"),
    ("data.priority_beta", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1,
     "a number in [0, 1]"),
    ("data.priority_beta_anneal_steps", lambda v: v is None or (isinstance(v, int) and v >= 1),
     "null (the budget) or an integer >= 1"),
    ("data.warmup_episodes", lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
    ("checkpoint.keep_all", lambda v: isinstance(v, bool), "true or false"),
    ("eval.interval_env_steps", lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
    ("eval.episodes", lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    ("eval.num_envs", lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    ("learner.lr", lambda v: v > 0, "a number > 0"),
    ("learner.gamma", lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    ("learner.td_lambda", lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    ("learner.grad_clip", lambda v: v > 0, "a number > 0"),
    ("learner.target_update_interval", lambda v: isinstance(v, int) and v >= 0, "an integer >= 0 (0 = soft)"),
    ("learner.target_tau", lambda v: 0 < v <= 1, "a number in (0, 1]"),
    ("learner.td_weighting", lambda v: v in ("none", "optimistic"), "none or optimistic"),
    ("learner.optimistic_alpha", lambda v: 0 < v <= 1, "a number in (0, 1]"),
    ("learner.epsilon_start", lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    ("learner.epsilon_finish", lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    ("learner.epsilon_anneal_steps", lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
    ("learner.intervention_anneal_steps", lambda v: isinstance(v, int) and v >= 0, "an integer >= 0 (0 = off)"),
    ("agent.hidden_dim", lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    ("agent.torso", lambda v: v in TORSOS, " or ".join(TORSOS)),
]


_ABSENT = object()


def _get(cfg: DictConfig, dotted: str) -> Any:
    """The value at ``dotted``, or ``_ABSENT`` (a run saved before the key existed, resumed now)."""
    node: Any = cfg
    for part in dotted.split("."):
        if part not in node:
            return _ABSENT
        node = node[part]
    return node


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` on the first bad value (unknown names list the allowed ones)."""
    ENVS.get(cfg.env.name)
    MIXERS.get(cfg.mixer.name)
    central = cfg.mixer.get("central_info", "state")
    if central not in MODES:
        raise ConfigError(f"unknown mixer.central_info {central!r}; allowed: {', '.join(MODES)}")
    if cfg.data.batch_size > cfg.data.buffer_size:
        raise ConfigError(f"data.batch_size={cfg.data.batch_size} exceeds data.buffer_size={cfg.data.buffer_size}; "
                          "allowed: batch_size <= buffer_size")
    for key, predicate, allowed in RULES:
        value = _get(cfg, key)
        if value is _ABSENT:
            continue
        try:
            ok = bool(predicate(value))
        except TypeError:
            ok = False
        check(ok, key, value, allowed)
    options = env_options(cfg.env)
    for key in (cfg.eval.get("env") or {}):
        if key not in options:
            raise ConfigError(f"eval.env.{key} is not an option of env {cfg.env.name}; allowed: {', '.join(options)}")
    processes = cfg.data.get("collector_processes", 0)
    if processes > 0:  # an integer: checked by RULES above
        if cfg.data.num_envs % processes:
            raise ConfigError(f"data.num_envs={cfg.data.num_envs} is not a multiple of data.collector_processes="
                              f"{processes}; allowed: num_envs = games per worker x collector_processes")
        if cfg.data.get("async_collection", False):
            raise ConfigError("data.async_collection=true with data.collector_processes="
                              f"{processes}; allowed: one of the two (worker processes already collect asynchronously)")


CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """The training config that ``python train.py <overrides>`` would see (for scripts and tests)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))
