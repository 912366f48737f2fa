"""A run's records on disk, the bottom of the study package (above the spec it reads): where a
finished run's record is (its archive folder, else its run folder), whether it is finished, what its
``finished.json`` says, copying a record, and the ``.claim`` of a run being trained. The runner
(:mod:`.runner`), the sharing of runs between studies (:mod:`.reuse`) and the report
(:mod:`.report`) read and write runs through it.

A run is finished when its record holds ``finished.json`` (written when ``train.py`` exited 0). A run
being trained is claimed by ``.claim`` in its run folder (created atomically, naming host and process):
another runner, on this machine or another one sharing the folder, skips it; a claim whose process on
this host is gone is taken over.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
from pathlib import Path
from typing import Optional

from lightning_marl.study.spec import Run

FINISHED, CLAIM = "finished.json", ".claim"
ARCHIVED = (FINISHED, "metrics.csv")  # what a finished run leaves in the archive, and its config:
CONFIG, PEER_CONFIG = ".hydra/config.yaml", "peer_config.json"  # this trainer's, or a peer framework's (.peers)
WALL = ".wall_s"  # in a run folder: the seconds the run has trained over all its sessions (the runner keeps it)
PEAK = ".peak_rss_mb"  # in a run folder: its processes' peak resident memory over all its sessions, MiB (the same)
SESSIONS = ".code"  # in a run folder: the code version of each session the run trained in, one line each


def earlier_sessions(run: Run, name: str) -> float:
    """What the run's earlier sessions left in its folder's file ``name`` (:data:`WALL`, :data:`PEAK`); 0 if none."""
    path = run.folder / name
    return float(path.read_text()) if path.is_file() else 0.0


def record(run: Run) -> Path:
    """Where a finished run's record is: its archive folder if it has one there, else its run folder."""
    if run.archive is not None and (run.archive / FINISHED).is_file():
        return run.archive
    return run.folder


def is_finished(run: Run) -> bool:
    return (record(run) / FINISHED).is_file()


def finished_record(run: Run) -> dict:
    """The finished run's ``finished.json``: host, machine, wall time, code versions, ``reused_from``."""
    return json.loads((record(run) / FINISHED).read_text())


def sessions(run: Run) -> Optional[int]:
    """How many sessions a finished run trained in (more than one: it was resumed from a checkpoint);
    None where neither its record nor its run folder says (runs finished before this was recorded)."""
    counted = finished_record(run).get("sessions")
    if counted is None and (run.folder / SESSIONS).is_file():
        counted = len((run.folder / SESSIONS).read_text().split())
    return counted


def reused_from(run: Run) -> Optional[str]:
    """Where a finished run's record was copied from (None for a run its own study trained)."""
    if not is_finished(run):
        return None
    return finished_record(run).get("reused_from")


def resumable(run: Run) -> bool:
    """Whether the run continues from what it trained (this trainer's run with a checkpoint and its
    config); else it starts over: a peer framework's run always does."""
    return run.peer is None and (run.folder / "checkpoints" / "last.ckpt").is_file() and \
        (run.folder / ".hydra" / "config.yaml").is_file()


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: a reader (another runner's
    ``status`` or estimate) sees the old file or the new one, never half of it."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(text)
    os.replace(partial, path)


def wall_left(runs: list[Run]) -> dict[Run, Optional[float]]:
    """The seconds of training each unfinished run of ``runs`` still needs, estimated: the median wall
    time of the finished runs of its preset and configuration (else of its preset's runs of the same
    framework: this trainer's, or the peer's), less what the run has trained already (:data:`WALL`) if it
    resumes (:func:`resumable`); None for a run with neither to go by."""
    by_config: dict = {}  # (preset, configuration) -> finished walls
    by_framework: dict = {}  # (preset, framework: the peer's name, None for this trainer) -> finished walls
    unfinished = []
    for run in runs:
        if not is_finished(run):
            unfinished.append(run)
            continue
        try:
            wall = finished_record(run).get("wall_s")
        except (OSError, ValueError):  # being written by another process: no figure from it this time
            wall = None
        if wall is not None:
            by_config.setdefault((run.preset, run.label), []).append(wall)
            by_framework.setdefault((run.preset, run.peer and run.peer.name), []).append(wall)
    left: dict[Run, Optional[float]] = {}
    for run in unfinished:
        known = by_config.get((run.preset, run.label)) or by_framework.get((run.preset, run.peer and run.peer.name))
        try:
            trained = earlier_sessions(run, WALL) if resumable(run) else 0.0
        except (OSError, ValueError):  # none yet, or being written
            trained = 0.0
        left[run] = max(0.0, statistics.median(known) - trained) if known else None
    return left


def remaining_wall(runs: list[Run]) -> tuple[float, int]:
    """The seconds of training the unfinished ``runs`` still need one at a time (:func:`wall_left`), and
    how many of them have no estimate."""
    left = wall_left(runs).values()
    return sum(s for s in left if s is not None), sum(s is None for s in left)


def copy_record(source: Path, target: Path, missing_ok: bool = False, peer: bool = False) -> None:
    """Copy the record files (:data:`ARCHIVED` and the config: this trainer's, or with ``peer`` the peer
    framework's) from the folder ``source`` into ``target`` (``missing_ok``: those that ``source`` holds)."""
    for name in ARCHIVED + ((PEER_CONFIG,) if peer else (CONFIG,)):
        if missing_ok and not (source / name).is_file():
            continue
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, target / name)


def archive(run: Run) -> None:
    """Copy the finished run's metrics, config and record into the study's archive."""
    if run.archive is not None:
        copy_record(run.folder, run.archive, peer=run.peer is not None)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claimed(run: Run) -> bool:
    """Whether a live process (this one included; on another host: any) holds the run's claim."""
    try:
        host, _, pid = (run.folder / CLAIM).read_text().partition(":")
    except FileNotFoundError:
        return False
    if host != socket.gethostname() or not pid.isdigit():
        return True
    return _alive(int(pid))


def claim(run: Run) -> bool:
    """Take the run for this process (False when another live process has it)."""
    run.folder.mkdir(parents=True, exist_ok=True)
    path = run.folder / CLAIM
    me = f"{socket.gethostname()}:{os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if claimed(run):
                return False
            path.unlink(missing_ok=True)  # its process died: take the run over
            continue
        with os.fdopen(fd, "w") as f:
            f.write(me)
        return True
    return False
