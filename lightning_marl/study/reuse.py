"""Runs that studies share. Two studies often hold the same run: the central-information study's
DuelMIX with ``z=history`` is the reference study's DuelMIX (history is its default), its QPLEX with
``z=state`` the reference study's QPLEX. A spec's ``reuse`` names the other studies whose finished runs
may stand in for its own: such a run is not trained again; its record (metrics, config,
``finished.json`` with ``reused_from``) is copied into this study's archive.

Two runs are the same run when their effective configs are equal: the config composed as ``train.py``
would compose it, in today's layout, merged onto the schema (:func:`identity`), less the settings
that only decide what is written and where (:data:`OUTPUT_ONLY`); the seed is part of the config. A
finished run is adopted only when the config it recorded has the same identity as the config this
study would run now, so a twin trained before a preset changed is trained again.

While a twin is being trained by another study's runner, the run is passed over (the runner goes on
with its other runs) and, once nothing else is left, left for a later call of the runner. Two
runners that pick twins in the same second both train them: both records are valid runs, one is
simply not needed.

The trainer's code version is not part of a run's identity: a twin trained by an older commit is
adopted when its config is today's (each record's ``code`` says which commits trained it, and the
report lists them). Identities are composed once per runner: a preset edited while a runner is up is
seen by the next runner.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Optional, Sequence

from omegaconf import OmegaConf

from lightning_marl.study.records import FINISHED, claimed, copy_record, finished_record, is_finished, record
from lightning_marl.study.spec import Run

# settings that change what a run writes (its logs, checkpoint cadence, console), never what it learns
# (checkpoint.replay is not one of them: a resumed run without its replay learns differently; the
# diagnostics are: tests/test_diagnostics.py shows that they change no weight)
OUTPUT_ONLY = ("logger", "checkpoint.every_n_updates", "checkpoint.keep_all", "resume", "trainer.enable_progress_bar",
               "trainer.log_every_n_steps", "diagnostics")


def effective(cfg: dict) -> dict:
    """The effective config ``cfg`` (plain containers, any layout) in today's layout, merged onto the
    schema, less :data:`OUTPUT_ONLY` (plain containers)."""
    from lightning_marl.config.migrate import on_schema

    plain = OmegaConf.to_container(on_schema(cfg), resolve=True, enum_to_str=True)
    for key in OUTPUT_ONLY:
        *parents, leaf = key.split(".")
        node = plain
        for part in parents:
            node = node.get(part, {})
        node.pop(leaf, None)
    return plain


def identity(cfg: dict) -> str:
    """:func:`effective` ``cfg`` as one canonical string."""
    return json.dumps(effective(cfg), sort_keys=True)


@lru_cache(maxsize=None)
def planned(argv: tuple) -> str:
    """The identity of the run that ``train.py <argv>`` would train now."""
    from lightning_marl.config import compose

    return identity(OmegaConf.to_container(compose(list(argv)), enum_to_str=True))


def recorded(run: Run) -> Optional[str]:
    """The identity of the config a finished run recorded (None where it left none, or one this
    version cannot read: e.g. written by a newer version with options this one lacks). The runner
    asks every second while a twin is queued: the file is read once per version of it."""
    path = record(run) / ".hydra" / "config.yaml"
    try:
        stat = path.stat()
        return _identity_of_file(path, stat.st_mtime_ns, stat.st_size)
    except OSError:
        return None


@lru_cache(maxsize=None)
def _identity_of_file(path: Path, mtime_ns: int, size: int) -> Optional[str]:
    try:
        return identity(OmegaConf.to_container(OmegaConf.load(path)))
    except Exception:  # noqa: BLE001 - unreadable means "no twin", never a failing runner
        return None


class Twins(dict):
    """Run -> the same runs in other studies (:func:`twins`), with what the runner asks of them."""

    def finished(self, run: Run) -> Optional[Run]:
        """A finished twin that ``run`` may adopt (:func:`finished_twin`)."""
        return finished_twin(run, self.get(run, []))

    def in_training(self, run: Run) -> bool:
        return twin_in_training(self.get(run, []))

    def adopt(self, run: Run, twin: Run) -> None:
        adopt(run, twin)


def twins(runs: Sequence[Run], others: Iterable[Run]) -> Twins:
    """For each of ``runs``, the runs among ``others`` (other studies') with the same planned config
    (another study's run that no longer composes, e.g. its preset was removed, is nobody's twin).
    A peer framework's runs are nobody's twins (their config is the peer's)."""
    by_identity: dict[str, list[Run]] = {}
    for other in others:
        if other.peer is not None:
            continue
        try:
            by_identity.setdefault(planned(other.argv), []).append(other)
        except Exception:  # noqa: BLE001 - Hydra's composition errors
            continue
    return Twins({run: by_identity.get(planned(run.argv), []) if run.peer is None else [] for run in runs})


def finished_twin(run: Run, candidates: Sequence[Run]) -> Optional[Run]:
    """A finished twin whose recorded config is the one ``run`` would train now."""
    for twin in candidates:
        if is_finished(twin) and recorded(twin) == planned(run.argv):
            return twin
    return None


def twin_in_training(candidates: Sequence[Run]) -> bool:
    return any(claimed(twin) for twin in candidates)


def adopt(run: Run, twin: Run) -> None:
    """Make the finished ``twin``'s record ``run``'s own (in its archive, else its run folder)."""
    target = run.archive if run.archive is not None else run.folder
    source = record(twin)
    copy_record(source, target, missing_ok=True)
    done = finished_record(twin)
    done.update(reused_from=str(source), argv=list(run.argv))
    (target / FINISHED).write_text(json.dumps(done))
