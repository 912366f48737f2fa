"""Exact resumption from checkpoints, and crash safety."""
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from lightning_marl.config import load
from lightning_marl.experiment import run

ROOT = Path(__file__).resolve().parents[1]
BASE = ["env=box_pushing", "mixer=qmix", "seed=7", "data.num_envs=4", "data.batch_size=8", "data.warmup_episodes=8",
        "learner.epsilon_anneal_steps=1000", "learner.target_update_interval=16", "eval.interval_env_steps=500",
        "eval.episodes=4", "eval.num_envs=4", "trainer.enable_progress_bar=false", "env.horizon=30"]


def assert_one_metric_stream(metrics: pd.DataFrame) -> None:
    """Training rows: one per logged update, in order; evaluation rows: in env-step order."""
    train = metrics.dropna(subset=["loss"])["step"]
    assert len(train) > 0 and train.is_monotonic_increasing and train.is_unique
    tests = metrics.dropna(subset=["test/return_mean"])["env_steps"]
    assert tests.is_monotonic_increasing and tests.is_unique and tests.min() == 0


def final_state(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


def assert_same_training_state(a: dict, b: dict) -> None:
    assert a["global_step"] == b["global_step"]
    for key, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][key]), f"parameter {key} differs"
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        for key in sa:
            assert torch.equal(sa[key], sb[key]), f"optimizer state {key} differs"
    da, db = a["MARLDataModule"], b["MARLDataModule"]
    assert (da["env_steps"], da["episodes"]) == (db["env_steps"], db["episodes"])


def kill_after_checkpoint(proc: subprocess.Popen, run_dir: Path, update: int, seconds: float = 240) -> None:
    """SIGKILL the training process group once a periodic checkpoint at ``update`` or later exists."""
    deadline = time.time() + seconds
    try:
        while time.time() < deadline:
            ckpts = list((run_dir / "checkpoints").glob("step*.ckpt")) if (run_dir / "checkpoints").exists() else []
            if any(int(p.stem[4:]) >= update for p in ckpts):
                return
            assert proc.poll() is None, "training ended before it could be killed"
            time.sleep(0.2)
        pytest.fail(f"no checkpoint at update {update} or later within {seconds} s")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.parametrize("mixer, extra", [("qmix", []), ("qfix_sum", []),
                                          ("qmix", ["env.random_init=true"]),  # the games' RNG is in the checkpoint
                                          # EPyMARL's settings: running reward moments, epsilon in the tests
                                          ("vdn", ["learner.standardise_rewards=true", "agent.recurrent=false",
                                                   "eval.epsilon=0.05"]),
                                          # BenchMARL's unit: transitions drawn from the restored replay
                                          ("vdn", ["data.sample=transitions", "agent.recurrent=false",
                                                   "agent.last_action=false", "learner.td_lambda=0"])])
def test_stop_and_resume_ends_bitwise_identical_to_an_uninterrupted_run(make_config, tmp_path, mixer, extra):
    overrides = [o if not o.startswith("mixer=") else f"mixer={mixer}" for o in BASE] + extra
    full, half = tmp_path / "full", tmp_path / "half"
    run(load(overrides + ["total_env_steps=1600"]), full)
    run(load(overrides + ["total_env_steps=800"]), half)
    stopped = final_state(half)
    run(load(overrides + ["total_env_steps=1600"]), half, ckpt_path=half / "checkpoints" / "last.ckpt")
    resumed = final_state(half)
    assert resumed["global_step"] > stopped["global_step"] > 0
    assert_same_training_state(final_state(full), resumed)
    # the metric stream continues: one file, steps increasing, nothing lost from before the stop
    metrics = pd.read_csv(half / "metrics.csv")
    assert_one_metric_stream(metrics)
    assert metrics["env_steps"].max() >= 1600


def test_a_different_seed_does_change_the_result(make_config, tmp_path):
    """Guards the equality test above: two runs that should differ do differ."""
    run(load(BASE + ["total_env_steps=400"]), tmp_path / "a")
    run(load([o if o != "seed=7" else "seed=8" for o in BASE] + ["total_env_steps=400"]), tmp_path / "b")
    a, b = final_state(tmp_path / "a"), final_state(tmp_path / "b")
    assert any(not torch.equal(t, b["state_dict"][k]) for k, t in a["state_dict"].items())


def test_sigkill_during_training_then_resume(tmp_path):
    run_dir = tmp_path / "killed"
    args = [sys.executable, "train.py", *BASE, "total_env_steps=4000", "checkpoint.every_n_updates=10",
            "trainer.log_every_n_steps=1", f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    kill_after_checkpoint(proc, run_dir, 20)  # of ~34 updates: a margin for a loaded machine
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)  # not corrupt
    killed_at = last["global_step"]
    before = pd.read_csv(run_dir / "metrics.csv")
    # a row's step is the index of the update that logged it: updates 0..killed_at-1 made the checkpoint
    assert before["step"].max() >= killed_at - 1  # metrics up to the checkpoint were on disk
    resumed = subprocess.run([sys.executable, "train.py", f"resume={run_dir}", "trainer.enable_progress_bar=false"],
                             cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = pd.read_csv(run_dir / "metrics.csv")
    kept = before[before["step"] < killed_at]
    assert_one_metric_stream(after)
    assert set(kept["step"]) <= set(after["step"])  # earlier metrics survive
    assert after["env_steps"].max() >= 4000 and after["step"].max() > killed_at
    # the resumed session's log and config stay inside the run's folder
    sessions = list((run_dir / "resumed").glob("*/.hydra/overrides.yaml"))
    assert len(sessions) == 1 and f"resume={run_dir}" in sessions[0].read_text()
    assert (sessions[0].parents[1] / "train.log").is_file()


def _children(pid: int) -> list[int]:
    out = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if int(fields.get("PPid", "0").strip()) == pid:
            out.append(int(status.parent.name))
    return out


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_collector_workers_exit_when_the_training_process_is_killed(tmp_path):
    args = [sys.executable, "train.py", "env=matrix", "mixer=vdn", "total_env_steps=10000000",
            "data.collector_processes=2", "data.start_method=fork", "trainer.enable_progress_bar=false",
            f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while len(workers := _children(proc.pid)) < 2:
            assert proc.poll() is None and time.time() < deadline, "the workers never started"
            time.sleep(0.2)
        time.sleep(2)  # collecting
        workers = _children(proc.pid)
    finally:
        proc.kill()  # SIGKILL: no cleanup code runs in the training process
        proc.wait()
    deadline = time.time() + 30
    while any(Path(f"/proc/{pid}").exists() and "Z" not in _state(pid) for pid in workers):
        assert time.time() < deadline, "collector workers outlived the killed training process"
        time.sleep(0.2)


def test_a_run_with_collector_workers_that_fails_exits_and_takes_its_workers_along(tmp_path):
    """Lightning skips the data module's teardown when fit raises; the run closes the collector
    itself (the workers are not daemonic: left running, the interpreter would wait for them)."""
    args = [sys.executable, "train.py", "env=matrix", "mixer=vdn", "total_env_steps=20000", "learner.lr=1e30",
            "data.collector_processes=2", "data.start_method=fork", "trainer.enable_progress_bar=false",
            f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3 and "training diverged" in proc.stderr


def _state(pid: int) -> str:
    try:
        return next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("State"))
    except (OSError, StopIteration):
        return "Z"


@pytest.mark.parametrize("keep_all", [False, True])
def test_periodic_checkpoints_keep_the_newest_or_all(make_config, tmp_path, keep_all):
    cfg = load(["env=matrix", "total_env_steps=400", "data.warmup_episodes=8", "checkpoint.every_n_updates=10",
                       f"checkpoint.keep_all={str(keep_all).lower()}", "trainer.enable_progress_bar=false"])
    run(cfg, tmp_path)
    updates = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"]
    every = list(range(10, updates + 1, 10))
    assert len(every) >= 3
    periodic = sorted(int(p.stem[4:]) for p in (tmp_path / "checkpoints").glob("step*.ckpt"))
    assert periodic == (every if keep_all else every[-1:])
    first = torch.load(tmp_path / "checkpoints" / f"step{periodic[0]}.ckpt", map_location="cpu", weights_only=False)
    assert first["global_step"] == periodic[0]  # each file holds the state at its own update


def test_resume_overrides_survive_a_crash_and_a_second_resume(tmp_path):
    """train 400 steps; resume with total_env_steps=1600; SIGKILL after a checkpoint; a plain resume
    must still end at 1600 (the override was written back to the run), not at the first budget."""
    run_dir = tmp_path / "run"
    base = [sys.executable, "train.py", "trainer.enable_progress_bar=false"]
    first = subprocess.run(base + ["env=matrix", "mixer=vdn", "total_env_steps=400", "checkpoint.every_n_updates=20",
                                   f"hydra.run.dir={run_dir}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    done = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"]
    proc = subprocess.Popen(base + [f"resume={run_dir}", "total_env_steps=1600"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    kill_after_checkpoint(proc, run_dir, done + 40)
    again = subprocess.run(base + [f"resume={run_dir}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "after 1600 env steps" in again.stdout
    final = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert final["MARLDataModule"]["env_steps"] == 1600
    sessions = sorted((run_dir / "resumed").glob("*/.hydra/config.yaml"))
    assert len(sessions) == 2  # each session's record holds the run's effective config
    assert all(OmegaConf.load(s).total_env_steps == 1600 and OmegaConf.load(s).env.name == "matrix" for s in sessions)


def test_a_diverging_run_stops_with_the_update_and_keeps_the_last_good_checkpoint(make_config, tmp_path):
    from lightning_marl.errors import DivergenceError

    cfg = load(["env=matrix", "mixer=qmix", "learner.lr=1e30", "learner.grad_clip=1e30", "total_env_steps=4000",
                       "data.warmup_episodes=8", "data.batch_size=8", "checkpoint.every_n_updates=1",
                       "eval.interval_env_steps=8", "trainer.enable_progress_bar=false"])
    with pytest.raises(DivergenceError, match=r"training diverged at update \d+ \(env step \d+\): "):
        run(cfg, tmp_path)
    for ckpt in (tmp_path / "checkpoints").glob("*.ckpt"):
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        assert all(torch.isfinite(t).all() for t in state["state_dict"].values()), ckpt
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert metrics.dropna(subset=["test/return_mean"])["test/return_mean"].map(math.isfinite).all()


def test_train_py_reports_divergence_with_a_nonzero_exit(tmp_path):
    proc = subprocess.run([sys.executable, "train.py", "env=matrix", "mixer=qmix", "learner.lr=1e30",
                           "learner.grad_clip=1e30", "total_env_steps=4000", "data.warmup_episodes=8",
                           "data.batch_size=8", "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path / 'r'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3
    assert "error: training diverged at update" in proc.stderr and "Traceback" not in proc.stderr
    assert "final greedy evaluation" not in proc.stdout
