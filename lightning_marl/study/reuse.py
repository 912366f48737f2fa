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

A peer framework's run (``peer:`` in a spec) is the same run as another study's when the peer, the
reader of its results, its environment variables and its command (filled in for the run, its folder left
out) are the same: what the peer is asked to do, since its config is the peer's. The recorded side is the
twin's spec's command filled in for the settings its ``finished.json`` recorded (``argv``).

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

from lightning_marl.study.records import (
    FINISHED,
    claimed,
    copy_record,
    finished_record,
    is_finished,
    record,
    write_atomic,
)
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


def planned_run(run: Run) -> str:
    """The identity of what ``run`` would train now: :func:`planned`, or a peer's :func:`peer_identity`."""
    return planned(run.argv) if run.peer is None else peer_identity(run, run.argv)


def peer_identity(run: Run, argv: Sequence[str]) -> str:
    """A peer framework's run as the peer is asked to do it: the peer, its reader and environment, and
    its command for ``run`` with the settings of ``argv``, its folder left out."""
    peer = run.peer
    return _peer_identity(peer.name, peer.reader, tuple(sorted(peer.env.items())), tuple(peer.command),
                          run.preset, run.mixer, run.seed, tuple(argv))


@lru_cache(maxsize=None)
def _peer_identity(name, reader, env, command, preset, mixer, seed, argv) -> str:
    from lightning_marl.study import peers
    from lightning_marl.study.spec import PeerSpec

    run = Run(preset, mixer, None, "", seed, Path("{folder}"), argv,
              peer=PeerSpec(name, [mixer], list(command), reader, dict(env)))
    return json.dumps({"peer": name, "reader": reader, "env": dict(env), "command": peers.command(run)},
                      sort_keys=True)


def recorded(run: Run) -> Optional[str]:
    """The identity of the config a finished run recorded (None where it left none, or one this
    version cannot read: e.g. written by a newer version with options this one lacks). The runner
    asks every second while a twin is queued: the file is read once per version of it. A peer's run:
    its spec's command for the settings it recorded (:func:`peer_identity`)."""
    if run.peer is not None:
        try:
            return peer_identity(run, finished_record(run)["argv"])
        except Exception:  # noqa: BLE001 - unreadable means "no twin", never a failing runner
            return None
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
    A peer framework's runs are twins of the same peer's runs (:func:`peer_identity`)."""
    by_identity: dict[str, list[Run]] = {}
    for other in others:
        try:
            by_identity.setdefault(planned_run(other), []).append(other)
        except Exception:  # noqa: BLE001 - Hydra's composition errors
            continue
    return Twins({run: by_identity.get(planned_run(run), []) for run in runs})


def finished_twin(run: Run, candidates: Sequence[Run]) -> Optional[Run]:
    """A finished twin whose recorded config is the one ``run`` would train now."""
    for twin in candidates:
        if is_finished(twin) and recorded(twin) == planned_run(run):
            return twin
    return None


def twin_in_training(candidates: Sequence[Run]) -> bool:
    return any(claimed(twin) for twin in candidates)


def adopt(run: Run, twin: Run) -> None:
    """Make the finished ``twin``'s record ``run``'s own (in its archive, else its run folder)."""
    target = run.archive if run.archive is not None else run.folder
    source = record(twin)
    copy_record(source, target, missing_ok=True, peer=twin.peer is not None)
    done = finished_record(twin)
    done.update(reused_from=str(source), argv=list(run.argv))
    write_atomic(target / FINISHED, json.dumps(done))
