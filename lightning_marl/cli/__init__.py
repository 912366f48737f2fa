"""``lightning-marl-train`` (and ``python train.py`` in a checkout): the training command.

    lightning-marl-train env=box_pushing mixer=qfix_sum seed=3
    lightning-marl-train resume=<run folder or .ckpt> [key=value ...]
    lightning-marl-train -m seed=0,1,2 mixer=qmix,qplex      (a Hydra multirun)

A single run's config is composed once (Hydra's compose) and validated once (the typed
:class:`~lightning_marl.config.TrainConfig`) before its folder is made: a refused value prints one
line ``error: <key>=<value> ...; allowed: ...`` and exits with code 2, leaving nothing on disk.
A multirun checks every combination of its sweep that way first (the first 512), then Hydra launches the jobs, each
composed by Hydra and validated once in its task.

Resuming: the run's saved config (``<run>/.hydra/config.yaml``) with this command's plain
``key=value`` overrides on top, checked against the run's own schema, is the run's effective config;
it is written back to the run, so a later resume keeps the overrides (:mod:`.resume`).

The package, by job: :mod:`.overrides` (parsing the command line), :mod:`.compose` (a new run's
config), :mod:`.resume` (the resume plan), :mod:`.folders` (run folders), :mod:`.requeue` (cluster
jobs), :mod:`.exits` (exit codes), :mod:`.job` (running one job).
"""
from __future__ import annotations

import os
import sys
from typing import Any, Optional, Sequence

from lightning_marl.cli.exits import EXIT_CONFIG, EXIT_DIVERGED, refused
from lightning_marl.cli.folders import SWEEP_DIR_ENV, find_checkpoint, unique_dir
from lightning_marl.cli.overrides import asks_hydra, check_launcher, combinations, is_multirun, logger_lists, parse
from lightning_marl.config import CONFIG_MODULE
from lightning_marl.errors import ConfigError


def preflight(argv: Sequence[str]) -> None:
    """Check every job of a multirun before Hydra launches any (raises ConfigError)."""
    from lightning_marl.cli.compose import compose_checked
    from lightning_marl.cli.resume import plan_resume

    overrides = [a for a in argv if not a.startswith("-")]
    check_launcher(overrides)
    for job in combinations(overrides):
        resume = next((o.value() for o in parse(job) if o.key_or_group == "resume"), None)
        if resume:
            plan_resume(str(resume), job)
        else:
            compose_checked(job)


def train(argv: Optional[Sequence[str]] = None) -> Any:
    """Console entry point ``lightning-marl-train``."""
    from lightning_marl.cli import job
    from lightning_marl.registry import ENVS, MIXERS

    argv = logger_lists(sys.argv[1:] if argv is None else argv)
    os.environ.pop(SWEEP_DIR_ENV, None)  # a new command: its multirun (if any) gets a new folder
    ENVS.load(), MIXERS.load()  # their options are config groups
    if not is_multirun(argv) and not asks_hydra(argv) and not any(a.startswith("-") for a in argv):
        try:
            return job.single(argv)
        except ConfigError as err:
            refused(err)
    if not asks_hydra(argv):
        try:
            preflight(argv)
        except ConfigError as err:
            refused(err)
    import hydra

    sys.argv = [sys.argv[0], *argv]
    main = hydra.main(config_path="pkg://" + CONFIG_MODULE, config_name="config", version_base="1.3")(job.task)
    return main()


__all__ = ["EXIT_CONFIG", "EXIT_DIVERGED", "find_checkpoint", "preflight", "train", "unique_dir"]
