"""Whether the code at hand reproduces a study's finished runs: each run's first env steps are trained
again, with its own command line, and the metrics are compared with its record, row for row.

A run's record is reproducible only as long as the code that trained it is; the record says which
commits trained it (``code`` in ``finished.json``, ``+dirty`` for a session that started while the
training code had uncommitted changes). Re-training a whole run costs what it cost the first time, so
this trains its start (``--env-steps``): a change in what the trainer computes shows in the first
updates' losses, TD errors and diagnostics long before it shows in a return. Same config, seed, code
and CPU model give the same numbers (the trainer is deterministic on a CPU: tests/test_resume.py), so
anything short of identical is a difference to explain: a later commit that changes floating-point
order, a run trained by code that was never committed, or another CPU (an Intel Xeon and an AMD EPYC
round the same float32 products differently, in the 8th digit of the first evaluation; the verdict
names the machine a run was trained on where it is not this one).

The replay is the run's ``argv`` with a smaller ``total_env_steps``; the only setting that follows the
budget, prioritized replay's beta annealing (``data.priority_beta_anneal_steps: null`` = the budget),
is pinned to the run's own budget so that the shorter run anneals as the longer one did. Compared are
the columns both ``metrics.csv`` files have, less those measured rather than computed
(:data:`MEASURED`), on the rows that hold more than bookkeeping (:data:`BOOKKEEPING`), up to the
replay's last env step, less the replay's final evaluation (the recorded run went on training
there). Not replayed: a peer framework's run (its code is not this trainer's), a run copied from
another study (``reused_from``: verify it there), and a run whose command no longer composes the
config it recorded (a preset changed since).
"""
from __future__ import annotations

import csv
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from lightning_marl.study.records import finished_record, is_finished, record
from lightning_marl.study.reuse import planned, recorded
from lightning_marl.study.runner import RUNNER_OVERRIDES, machine
from lightning_marl.study.spec import Run

MEASURED = ("env_steps_per_s",)  # wall-clock rates: differ between any two runs
BOOKKEEPING = ("env_steps", "step", "episodes")  # counters that every logged row carries


@dataclass(frozen=True)
class Verdict:
    run: Run
    state: str  # "identical", "different", "failed" or "skipped"
    detail: str

    def __str__(self) -> str:
        return f"{self.state:<9} {self.run.preset} {self.run.label} seed {self.run.seed}: {self.detail}"


def is_dirty(done: dict) -> bool:
    """Whether a session of the finished run (its ``finished.json``) started with uncommitted training code."""
    return any(code.endswith("+dirty") for code in done.get("code", []))


def replay_argv(run: Run, env_steps: int, folder: Path) -> list[str]:
    """``train.py``'s arguments for the first ``env_steps`` of ``run`` in ``folder``."""
    from lightning_marl.config import load

    cfg = load(list(run.argv))
    pinned = [f"data.priority_beta_anneal_steps={cfg.total_env_steps}"] \
        if cfg.data.prioritized and cfg.data.priority_beta_anneal_steps is None else []
    return [*RUNNER_OVERRIDES, *run.argv, f"total_env_steps={env_steps}", *pinned,
            "checkpoint.every_n_updates=0", "checkpoint.replay=false", f"hydra.run.dir={folder}"]


def _rows(path: Path, columns: list[str]) -> list[tuple]:
    with open(path, newline="") as f:
        rows = [(float(r["env_steps"] or "nan"), tuple(r.get(c, "") for c in columns)) for r in csv.DictReader(f)]
    content = [i for i, c in enumerate(columns) if c not in BOOKKEEPING]
    return [(steps, values) for steps, values in rows if any(values[i] for i in content)]


def compare(recorded_csv: Path, replay_csv: Path) -> tuple[bool, str]:
    """Whether the replay's metrics are the recorded run's up to the replay's last env step; in words."""
    with open(recorded_csv, newline="") as a, open(replay_csv, newline="") as b:
        common = sorted((set(next(csv.reader(a), [])) & set(next(csv.reader(b), []))) - set(MEASURED))
    replay = _rows(replay_csv, common)
    if not replay:
        return False, "the replay logged no metrics"
    last = replay[-1][0]
    tests = [i for i, c in enumerate(common) if c.startswith("test/")]
    while replay and replay[-1][0] == last and any(replay[-1][1][i] for i in tests):
        replay.pop()  # its final evaluation
    original = [row for row in _rows(recorded_csv, common) if row[0] <= last][:len(replay)]
    for i, (ours, theirs) in enumerate(zip(replay, original)):
        if ours != theirs:
            differ = [(c, y, x) for c, x, y in zip(common, ours[1], theirs[1]) if x != y]
            shown = ", ".join(f"{c} {y or '-'} recorded, {x or '-'} now" for c, y, x in differ[:3])
            return False, (f"row {i + 1} (env step {ours[0]:.0f}) differs in {len(differ)} of {len(common)} "
                           f"columns: {shown}")
    if len(original) < len(replay):
        return False, f"the record has {len(original)} rows up to env step {last:.0f}, the replay {len(replay)}"
    return True, f"{len(replay)} rows up to env step {last:.0f} identical in {len(common)} columns"


def verify(run: Run, env_steps: int, done: dict) -> Verdict:
    """Train the first ``env_steps`` of the finished ``run`` (``done``: its ``finished.json``) again with
    this trainer, in a temporary folder, and compare (:func:`compare`)."""
    if run.peer is not None:
        return Verdict(run, "skipped", f"{run.peer.name}'s run: not this trainer's code")
    if done.get("reused_from"):
        return Verdict(run, "skipped", f"copied from {done['reused_from']}: verify it there")
    if recorded(run) != planned(run.argv):
        return Verdict(run, "skipped", "its command no longer composes the config it recorded (a preset changed)")
    with tempfile.TemporaryDirectory(prefix="verify-") as scratch:
        folder = Path(scratch) / "run"
        command = [sys.executable, "-m", "lightning_marl.cli", *replay_argv(run, env_steps, folder)]
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if done.returncode != 0:
            tail = done.stdout.strip().splitlines()[-1:] or [""]
            return Verdict(run, "failed", f"exit {done.returncode}: {tail[0][:200]}")
        same, detail = compare(record(run) / "metrics.csv", folder / "metrics.csv")
    return Verdict(run, "identical" if same else "different", detail)


def trained_by(done: dict, commit: str) -> bool:
    """Whether a session of the finished run (its ``finished.json``) trained with ``commit`` (a prefix;
    ``+dirty`` or not)."""
    return any(code.split("+")[0].startswith(commit) for code in done.get("code", []))


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # so that the replay is killed and its temporary folder removed


def verify_all(runs: list[Run], env_steps: int, dirty_only: bool = False, commit: Optional[str] = None,
               say=print) -> dict[str, int]:
    """:func:`verify` every finished run of ``runs`` (``dirty_only``: those a dirty session trained;
    ``commit``: those a session of that commit trained). SIGTERM stops it as Ctrl-C does
    (``KeyboardInterrupt``), the replay under way killed and its folder removed."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _verify_all(runs, env_steps, dirty_only, commit, say)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _verify_all(runs, env_steps, dirty_only, commit, say) -> dict[str, int]:
    counts = {"identical": 0, "different": 0, "failed": 0, "skipped": 0}
    here = machine()
    for run in runs:
        if not is_finished(run):
            continue
        done = finished_record(run)
        if (run.peer is not None and (dirty_only or commit)) or (dirty_only and not is_dirty(done)) or \
                (commit and not trained_by(done, commit)):
            continue
        verdict = verify(run, env_steps, done)
        counts[verdict.state] += 1
        elsewhere = f" on {done['machine']}" if done.get("machine") not in (None, here) else ""
        say(f"{verdict} (trained by {' + '.join(done.get('code', [])) or 'unknown code'}{elsewhere})", flush=True)
    return counts
