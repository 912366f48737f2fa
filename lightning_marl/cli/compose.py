"""A new run's config from the command line: one Hydra composition, one validation."""
from __future__ import annotations

from typing import Sequence

from omegaconf import DictConfig, open_dict

from lightning_marl.cli.overrides import GROUPS, check_group_choices, is_hydra, parse, raw
from lightning_marl.config import compose
from lightning_marl.config.schema import LOGGERS, TrainConfig
from lightning_marl.config.validate import from_omegaconf, to_typed
from lightning_marl.errors import refuse


def compose_checked(overrides: Sequence[str], with_hydra: bool = False) -> tuple[DictConfig, TrainConfig]:
    """The composed config of a new run (``with_hydra``: with Hydra's node, kept out of the typed
    config) and its typed, checked form; raises ConfigError."""
    parsed = parse(overrides)
    check_group_choices([o for o in parsed if not is_hydra(o)])
    raw_values = {o.key_or_group: raw(o) for o in parsed if not is_hydra(o)}
    try:
        cfg = compose([o.input_line for o in parsed if with_hydra or not is_hydra(o)], with_hydra=with_hydra)
    except Exception as err:  # Hydra's composition errors (types, unknown keys)
        choice = next((o.value() for o in parsed if o.key_or_group.lstrip("/") == "logger"), "csv")
        chosen = {str(c) for c in (choice if isinstance(choice, list) else [choice])}
        for key, value in raw_values.items():  # an option of a logger that is not chosen (its node is null)
            parts = key.split(".")
            if len(parts) > 2 and parts[0] == "logger" and parts[1] in LOGGERS and parts[1] not in chosen:
                raise refuse(key, value, f"choose the logger too: logger=[csv,{parts[1]}]",
                             f"sets an option of logger {parts[1]}, which this run does not use") from None
        raise from_omegaconf(err, raw_values) from None
    job = job_config(cfg) if with_hydra else cfg
    values = [(o.key_or_group, o.value()) for o in parsed
              if not is_hydra(o) and o.key_or_group not in GROUPS and not o.is_delete()]
    return cfg, to_typed(job, values)


def job_config(cfg: DictConfig) -> DictConfig:
    """The job's config: ``cfg`` without Hydra's node (a copy; typed nodes keep their schema)."""
    job = cfg.copy()
    with open_dict(job):
        job.pop("hydra", None)
    return job
