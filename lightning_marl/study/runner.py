"""Running a study's grid through the normal training command, skipping what is done.

A run is finished when its record holds ``finished.json`` (:mod:`.records`; written when ``train.py``
exited 0). A run that was interrupted (its folder has a checkpoint) is resumed from it with
``resume=``. A run being trained is claimed (:func:`.records.claim`): another runner, on this machine
or another one sharing the folder, skips it. So a study can be stopped at any moment and continued
later, and several machines can work on one study.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from lightning_marl.study import peers
from lightning_marl.study.records import (
    CLAIM,
    FINISHED,
    PEAK,
    SESSIONS,
    WALL,
    archive,
    claim,
    claimed,
    earlier_sessions,
    is_finished,
    record,
    resumable,
    wall_left,
    write_atomic,
)
from lightning_marl.study.spec import Run, StudySpec

LOG = "study.log"
RUNNER_OVERRIDES = ("trainer.enable_progress_bar=false",)  # runs share the runner's log: no progress bar


def command(run: Run) -> list[str]:
    """``train.py`` for a new run, or ``resume=`` for one that left a checkpoint; a peer's own command
    for a peer framework's run."""
    if run.peer is not None:
        return peers.command(run)
    base = [sys.executable, "-m", "lightning_marl.cli", *RUNNER_OVERRIDES]
    if resumable(run):
        return base + [f"resume={run.folder}"]
    return base + [*run.argv, f"hydra.run.dir={run.folder}"]


def clear_unresumable(run: Run) -> None:
    """A run stopped before its first checkpoint starts over: its earlier metrics and config go, so
    that the new attempt does not append to them. A peer framework's run always starts over."""
    if run.peer is not None:
        return peers.start_over(run, keep=(CLAIM, LOG, SESSIONS))
    if resumable(run):
        return
    for name in ("metrics.csv", "hparams.yaml", "train.log", SESSIONS, WALL, PEAK):
        (run.folder / name).unlink(missing_ok=True)
    for name in (".hydra", "checkpoints", "resumed"):
        shutil.rmtree(run.folder / name, ignore_errors=True)


REPOSITORY = Path(__file__).resolve().parents[2]


def code_version(root: Path = REPOSITORY) -> str:
    """The trainer's code: its git commit, ``+dirty`` where the training code (package, configs,
    train.py; not this study package, which decides which runs to start but not what they learn) has
    uncommitted changes; outside a git checkout the installed package's version."""
    git = ["git", "-C", str(root)]
    try:
        head = subprocess.run(git + ["rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(git + ["status", "--porcelain", "--", "lightning_marl", ":(exclude)lightning_marl/study",
                                      "configs", "callbacks", "train.py"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        from importlib.metadata import PackageNotFoundError, version
        try:
            return f"lightning_marl {version('lightning_marl')}"
        except PackageNotFoundError:
            return "unknown"
    return head + ("+dirty" if dirty else "")


def machine() -> str:
    """This machine in a few words: CPU model, cores, memory, torch build and accelerator."""
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        memory = f", {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"
    except (ValueError, OSError, AttributeError):
        memory = ""
    try:
        gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    except RuntimeError:
        gpu = ", GPU not readable"
    return f"{cpu}, {os.cpu_count()} cores{memory}, torch {torch.__version__}{gpu}"


def tree_rss_mb(pid: int) -> float:
    """The resident memory of process ``pid`` and its descendants now, in MiB (Linux /proc; 0 elsewhere)."""
    parents: dict[int, int] = {}
    rss: dict[int, float] = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
            parents[int(status.parent.name)] = int(fields["PPid"])
            rss[int(status.parent.name)] = float(fields.get("VmRSS", "0 kB").split()[0]) / 1024
        except (OSError, KeyError, ValueError):
            continue
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, pp in parents.items() if pp == parent and p not in tree]
        tree.update(children)
        frontier += children
    return sum(rss.get(p, 0.0) for p in tree)


def start(run: Run) -> subprocess.Popen:
    clear_unresumable(run)
    code = code_version()
    with open(run.folder / SESSIONS, "a") as sessions:  # the code each session of the run trained with
        sessions.write(code + "\n")
    log = open(run.folder / LOG, "a")
    log.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} code {code}: {' '.join(command(run))}\n")
    log.flush()
    env = {**os.environ, **run.peer.env} if run.peer is not None else None
    proc = subprocess.Popen(command(run), stdout=log, stderr=subprocess.STDOUT, env=env)
    proc.started = time.time()  # type: ignore[attr-defined]
    # the earlier sessions' wall time and peak memory (MiB, the run's processes together, sampled), kept up to
    # date while a run trains: a run resumed near its end keeps an earlier session's larger peak
    proc.wall_before = earlier_sessions(run, WALL)  # type: ignore[attr-defined]
    proc.peak_rss = earlier_sessions(run, PEAK)  # type: ignore[attr-defined]
    proc.log = log  # type: ignore[attr-defined]
    return proc


def track(run: Run, proc: subprocess.Popen) -> float:
    """Note a training run's peak memory so far and write it and its wall time (every session of the run,
    this one up to now) to its folder, so that a session killed with its runner still counts; the wall time."""
    now = tree_rss_mb(proc.pid)
    if now > proc.peak_rss:  # type: ignore[attr-defined]
        proc.peak_rss = now  # type: ignore[attr-defined]
        write_atomic(run.folder / PEAK, f"{now:.1f}")
    return record_wall(run, proc)


def record_wall(run: Run, proc: subprocess.Popen) -> float:
    """Write the run's wall time (its earlier sessions' and this one's up to now) to its folder."""
    wall = proc.wall_before + time.time() - proc.started  # type: ignore[attr-defined]
    write_atomic(run.folder / WALL, f"{wall:.1f}")
    return wall


def finish(run: Run, proc: subprocess.Popen, finished_checkpoint: str, say=print) -> bool:
    """Record how the run's process ended; a finished run gets its record and is archived, and its
    checkpoint keeps what ``finished_checkpoint`` says (:func:`slim`). The wall time adds up every
    session of the run (:func:`track` keeps it while the run trains)."""
    proc.log.close()  # type: ignore[attr-defined]
    ok = proc.returncode == 0
    if ok and run.peer is not None:
        try:
            peers.record_results(run)
        except (OSError, KeyError, ValueError) as err:
            ok = False
            with open(run.folder / LOG, "a") as log:
                log.write(f"# the results of {run.peer.name} could not be read: {err}\n")
    wall = record_wall(run, proc)
    if ok:
        versions = (run.folder / SESSIONS).read_text().split() if (run.folder / SESSIONS).is_file() else []
        write_atomic(run.folder / FINISHED, json.dumps({
            "host": socket.gethostname(), "machine": machine(), "wall_s": round(wall, 1),
            "peak_rss_mb": round(proc.peak_rss, 1),  # type: ignore[attr-defined]
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": list(run.argv),
            "code": list(dict.fromkeys(versions)), "sessions": len(versions)}))
        archive(run)
        for periodic in (run.folder / "checkpoints").glob("step*.ckpt"):  # last.ckpt holds the final state
            periodic.unlink()
        slim(run, finished_checkpoint, say)
    (run.folder / CLAIM).unlink(missing_ok=True)
    return ok


def slim(run: Run, finished_checkpoint: str, say=print) -> None:
    """A finished run's ``last.ckpt`` (and rank files) without the replay where ``finished_checkpoint``
    is ``without_replay`` (a study spec's setting: the replay is most of a checkpoint, and a finished run
    needs it only to be continued bitwise). A failure is reported and leaves the checkpoint as it was."""
    ckpt, done = run.folder / "checkpoints" / "last.ckpt", run.folder / FINISHED
    if finished_checkpoint != "without_replay" or run.peer is not None or not ckpt.is_file() or not done.is_file():
        return  # (a run finished only in the archive: its folder's checkpoint is not the finished state)
    try:
        before = ckpt.stat()
        if before.st_mtime > done.stat().st_mtime:  # written after the run finished: a resume that extends it
            return
        from lightning_marl.checkpoint_files import drop_replay  # torch: only when there is a checkpoint

        if drop_replay(ckpt):
            say(f"slimmed {run.preset} {run.label} seed {run.seed}: {ckpt} without its replay "
                f"({before.st_size / 2**20:,.1f} -> {ckpt.stat().st_size / 2**20:,.1f} MiB)")
    except Exception as err:  # noqa: BLE001 - e.g. a full disk (torch raises RuntimeError): the runs go on
        say(f"cannot slim {ckpt}: {type(err).__name__}: {err}")


def run_all(runs: Sequence[Run], jobs: int = 1, limit: Optional[int] = None, say=print,
            twins: Optional[dict] = None, finished_checkpoint: str = StudySpec.finished_checkpoint,
            deadline: Optional[float] = None) -> dict[str, int]:
    """Train every unfinished, unclaimed run, ``jobs`` at a time (``limit``: at most that many).
    Finished runs' checkpoints keep what ``finished_checkpoint`` says (:func:`slim`), those finished
    before this call included.

    ``twins`` (run -> the same runs in other studies, with what the runner asks of them:
    :class:`.reuse.Twins`, made by :func:`.reuse.twins`): a run whose twin finished is
    adopted, not trained; one whose twin is being trained is passed over while other runs train, and
    left for a later call (``counts["waiting"]``) once nothing else is left: a twin's claim from
    another machine cannot be checked, so the runner does not wait on it.

    SIGTERM/SIGINT/SIGUSR1/SIGUSR2 to the runner go to its runs (each stops after its update and
    writes a checkpoint); the runner waits for them, starts nothing new and exits with the signal's
    code (``counts["stopped_by"]``). ``deadline`` (a time, as :func:`time.time`): a run starts only if
    its estimated training left (:func:`.records.wall_left`) ends before it; the others, and those with
    no estimate, are left for a later call (``counts["after_deadline"]``), so that a session or a batch
    job that ends at the deadline spends its time on runs it can finish (a peer framework's run cannot
    resume; one of this trainer's resumes, but a machine that is not kept loses what it trained). A
    started run is never stopped by the deadline. Runs must never outlive their runner: their claim is
    the runner's, and a later runner would start a second trainer in the same folder (so an error in the
    runner itself stops its runs the same way before it propagates)."""
    twins = twins or {}
    todo = [r for r in runs if not is_finished(r)]
    for run in runs:
        if run not in todo and not claimed(run):
            slim(run, finished_checkpoint, say)
    counts = {"finished_before": len(runs) - len(todo), "done": 0, "reused": 0, "failed": 0, "stopped": 0,
              "skipped": 0, "waiting": 0, "after_deadline": 0, "stopped_by": 0}
    active: list[tuple[Run, subprocess.Popen]] = []
    started = 0
    queue = list(todo)

    def forward(signum, frame):
        counts["stopped_by"] = signum
        for _, proc in active:
            proc.send_signal(signum)

    def adopt_finished_twins() -> None:
        for run in list(queue):
            if not twins.get(run) or claimed(run):  # a run being trained here or elsewhere keeps its own
                continue
            twin = twins.finished(run)
            if twin is None:
                continue
            try:
                twins.adopt(run, twin)
            except OSError as err:  # e.g. a full disk: the run is trained instead
                say(f"cannot reuse {record(twin)} for {run.preset} {run.label} seed {run.seed}: {err}")
                twins[run] = []
                continue
            queue.remove(run)
            counts["reused"] += 1
            say(f"reused {run.preset} {run.label} seed {run.seed} <- {record(twin)}")

    def fits(run: Run, estimates: dict) -> bool:
        """Whether the run is expected to end before the deadline (if any); if not, it leaves the queue."""
        if deadline is None or claimed(run) or is_finished(run):  # trained elsewhere: skipped as such
            return True
        left = estimates.get(run)
        if left is not None and time.time() + left <= deadline:
            return True
        queue.remove(run)
        counts["after_deadline"] += 1
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(deadline))
        why = ("no finished run of its preset to estimate its time by" if left is None else
               f"its ~{left / 60:.0f} min of training left would end after the deadline")
        say(f"later  {run.preset} {run.label} seed {run.seed}: {why} ({when})")
        return False

    def next_run() -> Optional[Run]:
        """The first queued run whose twin (if any) is not being trained elsewhere and that fits the deadline."""
        estimates = wall_left(runs) if deadline is not None else {}
        for run in list(queue):
            if not (twins.get(run) and twins.in_training(run)) and fits(run, estimates):
                queue.remove(run)
                return run
        return None

    stops = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
    previous = {s: signal.signal(s, forward) for s in stops}
    try:
        while queue or active:
            adopt_finished_twins()
            while not counts["stopped_by"] and len(active) < jobs and (limit is None or started < limit):
                run = next_run()
                if run is None:
                    break
                if is_finished(run) or not claim(run):
                    counts["skipped"] += 1
                    continue
                say(f"start  {run.preset} {run.label} seed {run.seed} -> {run.folder}")
                try:
                    active.append((run, start(run)))
                except Exception as err:  # noqa: BLE001 - e.g. the code changed under a running study and the
                    # run's config no longer composes: that run fails, the others go on
                    (run.folder / CLAIM).unlink(missing_ok=True)
                    counts["failed"] += 1
                    first = (str(err).strip().splitlines() or [type(err).__name__])[-1]
                    say(f"FAILED {run.preset} {run.label} seed {run.seed} (could not start: {first})")
                    continue
                started += 1
            if not active:
                for run in queue if not counts["stopped_by"] and (limit is None or started < limit) else ():
                    counts["waiting"] += 1
                    twin = next((t for t in twins[run] if claimed(t)), twins[run][0])
                    say(f"later  {run.preset} {run.label} seed {run.seed}: its twin is being trained in "
                        f"{twin.folder} ({(twin.folder / CLAIM).read_text() if claimed(twin) else 'claimed'}); "
                        "run the study again to reuse it")
                break
            time.sleep(1.0)
            for item in list(active):
                run, proc = item
                if proc.poll() is None:
                    track(run, proc)
                    continue
                active.remove(item)
                ok = finish(run, proc, finished_checkpoint, say)
                kind = "done" if ok else "stopped" if counts["stopped_by"] else "failed"
                counts[kind] += 1
                word = {"done": "done  ", "stopped": "stopped", "failed": "FAILED"}[kind]
                say(f"{word} {run.preset} {run.label} seed {run.seed} (exit {proc.returncode}; log {run.folder / LOG})")
    except BaseException:
        for _, proc in active:  # the runner fails: its runs checkpoint and end with it
            proc.send_signal(signal.SIGTERM)
        for _, proc in active:
            proc.wait()
        raise
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return counts
