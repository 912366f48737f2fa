"""Running a study's grid through the normal training command, skipping what is done.

A run is finished when its folder holds ``finished.json`` (written when ``train.py`` exited 0). A
run that was interrupted (its folder has a checkpoint) is resumed from it with ``resume=``. A run
being trained is claimed by ``.claim`` (created atomically, naming host and process): another
runner, on this machine or another one sharing the folder, skips it; a claim whose process on this
host is gone is taken over. So a study can be stopped at any moment and continued later, and
several machines can work on one study.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from lightning_marl.study.spec import Run

FINISHED, CLAIM, LOG = "finished.json", ".claim", "study.log"
ARCHIVED = (FINISHED, "metrics.csv", ".hydra/config.yaml")  # what a finished run leaves in the archive


def record(run: Run) -> Path:
    """Where a finished run's record is: its archive folder if it has one there, else its run folder."""
    if run.archive is not None and (run.archive / FINISHED).is_file():
        return run.archive
    return run.folder


def is_finished(run: Run) -> bool:
    return (record(run) / FINISHED).is_file()


def archive(run: Run) -> None:
    """Copy the finished run's metrics, config and record into the study's archive."""
    if run.archive is None:
        return
    for name in ARCHIVED:
        (run.archive / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(run.folder / name, run.archive / name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim(run: Run) -> bool:
    """Take the run for this process (False when another live process has it)."""
    run.folder.mkdir(parents=True, exist_ok=True)
    path = run.folder / CLAIM
    me = f"{socket.gethostname()}:{os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            host, _, pid = path.read_text().partition(":")
            if host != socket.gethostname() or not pid.isdigit() or _alive(int(pid)):
                return False
            path.unlink(missing_ok=True)  # its process died: take the run over
            continue
        with os.fdopen(fd, "w") as f:
            f.write(me)
        return True
    return False


def command(run: Run) -> list[str]:
    """``train.py`` for a new run, or ``resume=`` for one that left a checkpoint."""
    base = [sys.executable, "-m", "lightning_marl.cli", "trainer.enable_progress_bar=false"]
    if (run.folder / "checkpoints" / "last.ckpt").is_file() and (run.folder / ".hydra" / "config.yaml").is_file():
        return base + [f"resume={run.folder}"]
    return base + [*run.argv, f"hydra.run.dir={run.folder}"]


def clear_unresumable(run: Run) -> None:
    """A run stopped before its first checkpoint starts over: its earlier metrics and config go, so
    that the new attempt does not append to them."""
    if (run.folder / "checkpoints" / "last.ckpt").is_file():
        return
    for name in ("metrics.csv", "hparams.yaml", "train.log"):
        (run.folder / name).unlink(missing_ok=True)
    for name in (".hydra", "checkpoints", "resumed"):
        shutil.rmtree(run.folder / name, ignore_errors=True)


def start(run: Run) -> subprocess.Popen:
    clear_unresumable(run)
    log = open(run.folder / LOG, "a")
    log.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command(run))}\n")
    log.flush()
    proc = subprocess.Popen(command(run), stdout=log, stderr=subprocess.STDOUT)
    proc.started = time.time()  # type: ignore[attr-defined]
    proc.log = log  # type: ignore[attr-defined]
    return proc


def finish(run: Run, proc: subprocess.Popen) -> bool:
    """Record how the run's process ended; a finished run gets its record and is archived. The wall
    time adds up every session of the run that this runner saw end (a killed runner's is lost)."""
    proc.log.close()  # type: ignore[attr-defined]
    ok = proc.returncode == 0
    spent = run.folder / ".wall_s"
    before = float(spent.read_text()) if spent.is_file() else 0.0
    wall = before + time.time() - proc.started  # type: ignore[attr-defined]
    spent.write_text(f"{wall:.1f}")
    if ok:
        (run.folder / FINISHED).write_text(json.dumps({
            "host": socket.gethostname(), "wall_s": round(wall, 1),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": list(run.argv)}))
        archive(run)
        for periodic in (run.folder / "checkpoints").glob("step*.ckpt"):  # last.ckpt holds the final state
            periodic.unlink()
    (run.folder / CLAIM).unlink(missing_ok=True)
    return ok


def run_all(runs: Sequence[Run], jobs: int = 1, limit: Optional[int] = None, say=print) -> dict[str, int]:
    """Train every unfinished, unclaimed run, ``jobs`` at a time (``limit``: at most that many).

    SIGTERM/SIGINT/SIGUSR1/SIGUSR2 to the runner go to its runs (each stops after its update and
    writes a checkpoint); the runner waits for them, starts nothing new and exits with the signal's
    code (``counts["stopped_by"]``). Runs must never outlive their runner: their claim is the
    runner's, and a later runner would start a second trainer in the same folder."""
    todo = [r for r in runs if not is_finished(r)]
    counts = {"finished_before": len(runs) - len(todo), "done": 0, "failed": 0, "stopped": 0, "skipped": 0,
              "stopped_by": 0}
    active: list[tuple[Run, subprocess.Popen]] = []
    started = 0
    queue = list(todo)

    def forward(signum, frame):
        counts["stopped_by"] = signum
        for _, proc in active:
            proc.send_signal(signum)

    stops = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
    previous = {s: signal.signal(s, forward) for s in stops}
    try:
        while queue or active:
            while queue and not counts["stopped_by"] and len(active) < jobs and (limit is None or started < limit):
                run = queue.pop(0)
                if is_finished(run) or not claim(run):
                    counts["skipped"] += 1
                    continue
                say(f"start  {run.preset} {run.label} seed {run.seed} -> {run.folder}")
                active.append((run, start(run)))
                started += 1
            if not active:
                break
            time.sleep(1.0)
            for item in list(active):
                run, proc = item
                if proc.poll() is None:
                    continue
                active.remove(item)
                ok = finish(run, proc)
                kind = "done" if ok else "stopped" if counts["stopped_by"] else "failed"
                counts[kind] += 1
                word = {"done": "done  ", "stopped": "stopped", "failed": "FAILED"}[kind]
                say(f"{word} {run.preset} {run.label} seed {run.seed} (exit {proc.returncode}; log {run.folder / LOG})")
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return counts
