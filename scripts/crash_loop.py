"""Crash safety, measured: a Box Pushing run is killed with SIGKILL at random moments, resumed after
each kill, and must end bitwise equal to the same run uninterrupted, with a clean checkpoint folder.

    python scripts/crash_loop.py --kills 20 --seed 0

A checkpoint is written after every update, so some kills land inside a checkpoint write (the
script counts the kills that left a temporary checkpoint file behind). Prints one line per kill
and a summary; exit code 1 if the runs differ or the folder is not clean.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from lightning_marl.arguments import OneLineParser, at_least
from lightning_marl.checkpoint_files import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ["env=box_pushing", "mixer=qmix", "seed=7", "data.num_envs=4", "data.batch_size=8", "data.warmup_episodes=8",
            "learner.epsilon_anneal_steps=1000", "learner.target_update_interval=16", "eval.interval_env_steps=500",
            "eval.episodes=4", "eval.num_envs=4", "env.horizon=30", "trainer.enable_progress_bar=false",
            "checkpoint.every_n_updates=1"]


def train(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def same(a: dict, b: dict) -> list[str]:
    """What differs between two checkpoints' training states (empty: bitwise equal)."""
    out = []
    if a["global_step"] != b["global_step"]:
        out.append(f"global_step {a['global_step']} vs {b['global_step']}")
    out += [f"parameter {k}" for k, t in a["state_dict"].items() if not torch.equal(t, b["state_dict"][k])]
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        out += [f"optimizer {k}" for k in sa if not torch.equal(sa[k], sb[k])]
    for key in ("env_steps", "episodes", "rounds"):
        if a["MARLDataModule"][key] != b["MARLDataModule"][key]:
            out.append(key)
    return out


def main(argv=None) -> None:
    parser = OneLineParser(description=__doc__)
    parser.add_argument("--kills", type=at_least(1), default=20)
    parser.add_argument("--budget", type=at_least(100), default=60000, help="env steps of the run")
    parser.add_argument("--seed", type=at_least(0), default=0, help="seed of the kill moments")
    parser.add_argument("--min-wait", type=float, default=5.0, help="seconds after a (re)start before a kill, at least")
    parser.add_argument("--max-wait", type=float, default=12.0)
    parser.add_argument("overrides", nargs="*", help="further key=value settings of both runs (e.g. device=cuda "
                                                     "trainer=gpu for the GPU check)")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="crash_loop_"))
    settings = SETTINGS + [f"total_env_steps={args.budget}", *args.overrides]
    start = time.time()
    reference = train(settings + [f"hydra.run.dir={work / 'uninterrupted'}"])
    assert reference.wait() == 0, "the uninterrupted run failed"
    folder = work / "killed"
    proc = train(settings + [f"hydra.run.dir={folder}"])
    kills = inside_writes = 0
    while kills < args.kills:
        time.sleep(rng.uniform(args.min_wait, args.max_wait))
        if proc.poll() is not None:
            print(f"the run finished before kill {kills + 1}; raise --budget")
            break
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
        leftovers = list((folder / "checkpoints").glob(".*.tmp")) if (folder / "checkpoints").exists() else []
        inside_writes += bool(leftovers)
        last = folder / "checkpoints" / "last.ckpt"
        step = load_checkpoint(last)["global_step"] if last.is_file() else None
        print(f"kill {kills:2d}: last.ckpt at update {step}; {'inside a checkpoint write' if leftovers else ''}",
              flush=True)
        proc = train([f"resume={folder}"] if last.is_file() else settings + [f"hydra.run.dir={folder}"])
    code = proc.wait()
    differences = same(load_checkpoint(work / "uninterrupted" / "checkpoints" / "last.ckpt"),
                       load_checkpoint(folder / "checkpoints" / "last.ckpt"))
    files = sorted(p.name for p in (folder / "checkpoints").iterdir())
    clean = (all(not n.startswith(".") and "-v" not in n for n in files)
             and sum(n.startswith("step") for n in files) <= 1)
    print(f"{kills} SIGKILLs ({inside_writes} inside a checkpoint write), final resume exit {code}, "
          f"{time.time() - start:.0f} s; bitwise equal to the uninterrupted run: {not differences}"
          + (f" (differs: {', '.join(differences[:5])})" if differences else "")
          + f"; checkpoint folder: {', '.join(files)} ({'clean' if clean else 'NOT clean'}); runs in {work}")
    sys.exit(0 if (code == 0 and not differences and clean) else 1)


if __name__ == "__main__":
    main()
