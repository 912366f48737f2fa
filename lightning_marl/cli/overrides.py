"""The command line's ``key=value`` overrides: Hydra's own parse, the config groups and their options,
the jobs of a multirun sweep, and the launcher plugins a sweep may ask for."""
from __future__ import annotations

import importlib.util
import itertools
from typing import Sequence

from lightning_marl.config import CONFIG_MODULE
from lightning_marl.config.schema import LOGGERS, TRAINERS
from lightning_marl.errors import ConfigError, refuse
from lightning_marl.registry import ENVS, MIXERS

GROUPS = ("env", "mixer", "trainer", "logger", "experiment")
# Hydra's own flags that do not start a run: no check, Hydra answers them
INFO_FLAGS = ("-h", "--help", "--hydra-help", "-c", "--cfg", "-i", "--info", "-sc", "--shell-completion", "--version")
SWEEP_CHECK_LIMIT = 512
# launchers from Hydra plugins (hydra/launcher=...): the module each needs and the extra installing it
LAUNCHER_PLUGINS = {"joblib": ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher"),
                    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
                    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
                    "slurm": ("hydra_plugins.hydra_submitit_launcher", "slurm")}


def is_multirun(argv: Sequence[str]) -> bool:
    return "-m" in argv or "--multirun" in argv


def asks_hydra(argv: Sequence[str]) -> bool:
    """Whether the command line asks Hydra something (help, the config, ...) instead of training."""
    return any(a in INFO_FLAGS or a.split("=", 1)[0] in INFO_FLAGS for a in argv)


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


def raw(override) -> str:
    """The value of an override as it was typed."""
    return override.input_line.split("=", 1)[1] if "=" in override.input_line else ""


def is_hydra(override) -> bool:
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
    options = {"env": ENVS.names(), "mixer": MIXERS.names(), "trainer": list(TRAINERS), "logger": list(LOGGERS)}
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


def logger_lists(argv: Sequence[str]) -> list[str]:
    """``logger=csv,wandb`` means both loggers: outside a multirun (where commas sweep), Hydra's list
    syntax ``logger=[csv,wandb]`` is what the user meant."""
    if is_multirun(argv):
        return list(argv)
    return [f"{a.split('=', 1)[0]}=[{a.split('=', 1)[1]}]"
            if a.split("=", 1)[0].lstrip("/") == "logger" and "," in a and "[" not in a else a for a in argv]


def check_launcher(overrides: Sequence[str]) -> None:
    """``hydra/launcher=X`` whose plugin is not installed, refused with the line that installs it."""
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
