"""Checking a composed config against the schema: every wrong value is a :class:`ConfigError` whose
message names ``key=value`` and what is allowed, raised before anything is built.

What OmegaConf's own typing lets through, and is refused here: booleans written as anything but
``true``/``false`` (OmegaConf reads ``no``, ``off``, ``0`` as false), keys the chosen schema does
not have (``+env.foo=1``), numbers out of their range or not finite, and the cross-field rules of
:func:`cross_field_rules`.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from enum import Enum
from typing import Any, Iterable, Optional

from omegaconf import DictConfig, OmegaConf

from lightning_marl.config import schema as S
from lightning_marl.errors import ConfigError, one_of, refuse, show
from lightning_marl.registry import ENVS, MIXERS


# ----------------------------------------------------------------------------- what is allowed, in words
def _bounds(meta: dict) -> str:
    has = {k: meta.get(k) is not None for k in ("ge", "gt", "le", "lt")}
    lo = [f">= {meta['ge']:g}"] if has["ge"] else [f"> {meta['gt']:g}"] if has["gt"] else []
    hi = [f"<= {meta['le']:g}"] if has["le"] else [f"< {meta['lt']:g}"] if has["lt"] else []
    if lo and hi:
        left = "[" if "ge" in meta and meta["ge"] is not None else "("
        right = "]" if "le" in meta and meta["le"] is not None else ")"
        low = meta["ge"] if meta.get("ge") is not None else meta["gt"]
        high = meta["le"] if meta.get("le") is not None else meta["lt"]
        return f" in {left}{low:g}, {high:g}{right}"
    return "".join(f" {b}" for b in lo + hi)


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """(inner type, optional) of ``Optional[T]``."""
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def allowed(schema: type, name: str) -> str:
    """What field ``name`` of dataclass ``schema`` allows, in words."""
    f = next(f for f in dataclasses.fields(schema) if f.name == name)
    tp, optional = _unwrap(typing.get_type_hints(schema)[name])
    meta = dict(f.metadata)
    if meta.get("choices"):
        text = one_of([show(c) for c in meta["choices"]])
    elif tp is bool:
        text = "true or false"
    elif isinstance(tp, type) and issubclass(tp, Enum):
        text = one_of([m.value for m in tp])
    elif tp is int:
        text = ("an even integer" if meta.get("even") else "an integer") + _bounds(meta)
    elif tp is float:
        text = "a finite number" + _bounds(meta)
    elif tp is str:
        text = "a string"
    elif typing.get_origin(tp) in (dict, typing.Dict):
        text = "a mapping"
    elif typing.get_origin(tp) in (list, typing.List):
        text = "a list"
    else:
        text = "a value"
    return f"null or {text}" if optional else text


# ----------------------------------------------------------------------------- the walk
def _schema_of(node: DictConfig) -> Optional[type]:
    tp = OmegaConf.get_type(node)
    return tp if dataclasses.is_dataclass(tp) else None


def unknown_keys(cfg: DictConfig, prefix: str = "") -> None:
    """Refuse keys that the node's schema does not have (OmegaConf lets ``+key=value`` add them)."""
    schema = _schema_of(cfg)
    if schema is None:
        return
    names = [f.name for f in dataclasses.fields(schema)]
    for key in cfg.keys():
        if key not in names:
            where = prefix.rstrip(".") or "the config"
            extra = f" of {where} ({cfg.name})" if "name" in names and key != "name" else f" of {where}"
            raise refuse(f"{prefix}{key}", OmegaConf.select(cfg, str(key), throw_on_missing=False),
                         ", ".join(n for n in names if n != "name") or "no options", f"is not an option{extra}")
        value = OmegaConf.select(cfg, str(key), throw_on_missing=False)
        if isinstance(value, DictConfig):
            unknown_keys(value, f"{prefix}{key}.")


def strict_booleans(cfg: DictConfig, overrides: Iterable[tuple[str, Any]]) -> None:
    """A boolean key accepts only ``true``/``false``: OmegaConf converts ``no``/``off``/``0`` itself."""
    for key, raw in overrides:
        value = OmegaConf.select(cfg, key, throw_on_missing=False)
        if isinstance(value, bool) and not isinstance(raw, bool):
            raise refuse(key, raw, "true or false", "is not a boolean")


_BOUNDS = {"ge": lambda v, b: v < b, "gt": lambda v, b: v <= b, "le": lambda v, b: v > b, "lt": lambda v, b: v >= b}


def check_ranges(obj: Any, prefix: str = "") -> None:
    """Walk the typed config object; check each field against its metadata; floats must be finite."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            check_ranges(value, key + ".")
            continue
        if value is None:
            continue
        meta = f.metadata
        bad = False
        if isinstance(value, float) and not math.isfinite(value):
            bad = True
        elif meta.get("choices") is not None and value not in meta["choices"]:
            bad = True
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            bad = any(meta.get(bound) is not None and fails(value, meta[bound])
                      for bound, fails in _BOUNDS.items()) or bool(meta.get("even") and value % 2)
        if bad:
            raise refuse(key, value, allowed(type(obj), f.name))


# ----------------------------------------------------------------------------- cross-field rules
def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def cross_field_rules(c: S.TrainConfig, env_checks: bool = True) -> None:
    """Rules between fields, checked after composition and before anything is built."""
    d = c.data
    if d.sample == S.SampleUnit.episodes and d.batch_size > d.buffer_size:
        raise refuse("data.batch_size", d.batch_size, f"at most data.buffer_size={d.buffer_size} (episodes)",
                     "exceeds the replay")
    if d.sample == S.SampleUnit.transitions:  # a transition carries no history and no later steps
        needs = {"agent.recurrent": (c.agent.recurrent, False), "agent.last_action": (c.agent.last_action, False),
                 "learner.td_lambda": (c.learner.td_lambda, 0.0), "data.prioritized": (d.prioritized, False)}
        for key, (value, wanted) in needs.items():
            if value != wanted:
                raise refuse("data.sample", "transitions", f"episodes, or transitions with {key}={show(wanted)} "
                             "(a sampled transition has no earlier steps to unroll and no later ones to bootstrap "
                             "from, and priorities are kept per episode)", f"does not work with {key}={show(value)}")
    if d.warmup_episodes > d.buffer_size:
        raise refuse("data.warmup_episodes", d.warmup_episodes,
                     f"at most data.buffer_size={d.buffer_size} (no update could ever start)", "exceeds the replay")
    if d.collector_processes:
        if d.num_envs % d.collector_processes:
            raise refuse("data.num_envs", d.num_envs, f"a multiple of data.collector_processes={d.collector_processes} "
                         "(num_envs = games per worker x collector_processes)", "is not a multiple of the workers")
    if d.env_workers != S.EnvWorkers.auto and not c.env.worker_processes:
        workers = [name for name in ENVS.names() if ENVS.config(name).worker_processes]
        raise refuse("data.env_workers", d.env_workers, f"auto for env {c.env.name} (its games are batched in torch; "
                     f"worker processes exist for {', '.join(workers)})", "does not apply")
    if c.learner.shaping_anneal_steps and not c.env.shaped_reward:
        raise refuse("learner.shaping_anneal_steps", c.learner.shaping_anneal_steps,
                     f"0 for env {c.env.name} (it has no shaped reward)", "does not apply")
    if c.learner.intervention_anneal_steps and not c.mixer.supports_intervention:
        takers = [name for name in MIXERS.names() if MIXERS.config(name).supports_intervention]
        raise refuse("learner.intervention_anneal_steps", c.learner.intervention_anneal_steps,
                     f"0 for mixer {c.mixer.name} (intervention annealing is for {', '.join(takers)})",
                     "does not apply")
    if c.learner.compile is not None:
        import torch

        backends = torch.compiler.list_backends(exclude_tags=())
        if c.learner.compile not in backends:
            raise refuse("learner.compile", c.learner.compile,
                         "null or a torch.compile backend: " + ", ".join(backends))
    if c.agent.torso == S.Torso.cnn and not c.env.grid_observations():
        raise refuse("agent.torso", "cnn", "mlp for this env (cnn needs grid observations: env=overcooked "
                     "env.obs=lossless)")
    gpus = _cuda_devices()
    if c.device != "cpu":
        if not (c.device == "cuda" or c.device.startswith("cuda:")):
            raise refuse("device", c.device, "cpu, cuda or cuda:N")
        index = int(c.device.split(":")[1]) if ":" in c.device and c.device.split(":")[1].isdigit() else 0
        if index >= gpus:
            raise refuse("device", c.device, f"cpu (this machine has {gpus} CUDA device(s))", "is not available")
    if c.trainer.accelerator in ("gpu", "cuda") and c.trainer.devices > gpus:
        raise refuse("trainer.accelerator", c.trainer.accelerator,
                     f"cpu (trainer=cpu; this machine has {gpus} CUDA device(s), trainer.devices={c.trainer.devices})",
                     "is not available")
    check_eval_env(c)
    if all(getattr(c.logger, name) is None for name in S.LOGGERS):
        raise refuse("logger", "[]", "at least one of " + ", ".join(S.LOGGERS) + " (logger=[csv,wandb])",
                     "chooses no logger")
    check_logger_packages(c.logger)
    if env_checks:
        check_env(c.env)


# the package each optional logger needs (any one of them) and the extra that installs it
LOGGER_PACKAGES = {"tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"), "wandb": (("wandb",), "wandb"),
                   "mlflow": (("mlflow",), "mlflow")}


def logger_installed(name: str) -> bool:
    """Whether the package logger ``name`` needs is importable (csv needs none)."""
    import importlib.util

    return name not in LOGGER_PACKAGES or any(importlib.util.find_spec(m) for m in LOGGER_PACKAGES[name][0])


def check_logger_packages(logger: S.LoggerConfig) -> None:
    """A chosen logger whose package is not installed is refused with the line that installs it."""
    for name, (modules, extra) in LOGGER_PACKAGES.items():
        if getattr(logger, name) is not None and not logger_installed(name):
            others = [n for n in S.LOGGERS if logger_installed(n)]
            raise ConfigError(f"logger={name} needs the {modules[0]} package, which is not installed; allowed: "
                              f"install it (pip install 'lightning_marl[{extra}]', in a checkout "
                              f".venv/bin/pip install -e '.[{extra}]'), or a logger that is: {', '.join(others)}")


def check_eval_env(c: S.TrainConfig) -> None:
    """``eval.env`` keys are options of the chosen env, with values of their types."""
    schema = type(c.env)
    options = [f.name for f in dataclasses.fields(schema) if f.name != "name"]
    for key, value in c.eval.env.items():
        if key not in options:
            raise refuse(f"eval.env.{key}", value, ", ".join(options), f"is not an option of env {c.env.name}")
    if c.eval.env:
        try:
            merged = OmegaConf.merge(OmegaConf.structured(c.env), dict(c.eval.env))
        except Exception as err:  # a value of the wrong type for the env option
            key = getattr(err, "key", "?")
            raise refuse(f"eval.env.{key}", c.eval.env.get(key), allowed(schema, str(key)),
                         "has the wrong type") from None
        check_ranges(OmegaConf.to_object(merged), "eval.env.")


def check_env(env: Any) -> None:
    """The env family's own checks that the schema cannot express (a payoff table's shape, a layout
    or map the installed package has)."""
    try:
        env.check()
    except (ImportError, FileNotFoundError) as err:  # an optional package or the game is missing
        lines = str(err).strip().splitlines()
        raise ConfigError(f"env={env.name} cannot run here: {lines[0]}; allowed: the envs whose packages are "
                          f"installed ({'; '.join(lines[1:3]) or 'see docs/smac.md'})") from None


# ----------------------------------------------------------------------------- entry
def typed_options(schema: type, prefix: str, **options: Any) -> Any:
    """``schema`` filled from keyword ``options`` (the API path: ``make_env``, ``build_mixer``):
    unknown options, values of the wrong type and values out of range are refused."""
    names = [f.name for f in dataclasses.fields(schema)]
    for key, value in options.items():
        if key not in names:
            raise refuse(f"{prefix}{key}", value, ", ".join(n for n in names if n != "name"), "is not an option")
    try:
        node = OmegaConf.merge(OmegaConf.structured(schema), options)
        typed = OmegaConf.to_object(node)
    except Exception as err:  # a value OmegaConf cannot convert to the field's type
        key = str(getattr(err, "key", None) or getattr(err, "full_key", "?"))
        if key in names:
            raise refuse(f"{prefix}{key}", options.get(key), allowed(schema, key), "has the wrong type") from None
        raise from_omegaconf(err) from None
    check_ranges(typed, prefix)
    return S.freeze(typed)



def to_typed(cfg: DictConfig, overrides: Iterable[tuple[str, Any]] = (), env_checks: bool = True) -> S.TrainConfig:
    """The one validation: check the composed ``cfg`` (and the raw values of the command line
    ``overrides``) and return it typed and frozen. ``env_checks=False`` skips the env family's own
    checks (which need its package installed)."""
    for group, registry in (("env", ENVS), ("mixer", MIXERS)):
        name = OmegaConf.select(cfg, f"{group}.name", throw_on_missing=False)
        if name not in registry:
            raise refuse(group, name, ", ".join(registry.names()), "is not an option")
    strict_booleans(cfg, overrides)
    unknown_keys(cfg)
    try:
        typed = OmegaConf.to_object(cfg)
    except Exception as err:  # a value OmegaConf cannot convert
        raise from_omegaconf(err) from None
    for group, registry in (("env", ENVS), ("mixer", MIXERS)):
        node = getattr(typed, group)
        if type(node) is not registry.config(node.name):  # e.g. mixer.name=qmix on a QFIX-sum config
            raise refuse(f"{group}.name", node.name, f"the config group choice instead: {group}={node.name}",
                         "cannot change the schema")
    check_ranges(typed)
    cross_field_rules(typed, env_checks)
    return S.freeze(typed)


def from_omegaconf(err: BaseException, raw: Optional[dict] = None) -> ConfigError:
    """An OmegaConf/Hydra type or key error as one ``key=value ...; allowed: ...`` line."""
    cause = err
    while cause is not None and getattr(cause, "full_key", None) is None and cause.__cause__ is not None:
        cause = cause.__cause__
    full_key = getattr(cause, "full_key", None)
    schema = getattr(cause, "object_type", None)
    key = getattr(cause, "key", None)
    if full_key and schema is not None and dataclasses.is_dataclass(schema) and key is not None:
        value = (raw or {}).get(full_key, getattr(cause, "value", None))
        names = [f.name for f in dataclasses.fields(schema)]
        if str(key) in names:
            return refuse(str(full_key), value, allowed(schema, str(key)), "has the wrong type")
        parent = str(full_key).rsplit(".", 1)[0] if "." in str(full_key) else ""
        name = next((f.default for f in dataclasses.fields(schema) if f.name == "name"), None)
        where = f" of {parent}" + (f" ({name})" if isinstance(name, str) else "") if parent else ""
        return refuse(str(full_key), value, ", ".join(n for n in names if n != "name") or "no options",
                      f"is not an option{where}")
    # the override that reached the key: at it or below it (env.scenario.a.b=4 fails at env.scenario.a), else the
    # nearest above it (env.scenario={a: 1} fails at env.scenario.a), never the group choice env
    full = f"{full_key}."
    typed = max((k for k in raw or {} if full_key and (full.startswith(k + ".") or k.startswith(full))),
                key=lambda k: (k.startswith(full), len(k)), default=None)
    if schema is dict and typed is not None:  # a free-form mapping (env.scenario) gets a key it lacks
        return refuse(typed, raw[typed], f"+{typed}={raw[typed]} (Hydra's + adds keys a mapping does not have yet)",
                      "sets keys the mapping does not have")
    first = str(err).strip().splitlines()
    return ConfigError(first[0] if first else type(err).__name__)
