"""Checkpoints: loading runs no code, broken files are named (and resume falls back), architecture
mismatches are one line, signals stop with a checkpoint, the folder stays tidy, and the replay is
stored up to what it holds."""
import gc
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from lightning_marl.checkpoint_files import (
    DATA_STATE,
    RANKS,
    REPLAY,
    CheckpointError,
    choose_checkpoint,
    drop_replay,
    load_checkpoint,
    load_rank_state,
    rank_file,
)
from lightning_marl.checkpointing import AtomicCheckpointIO
from lightning_marl.cli.resume import plan_resume
from lightning_marl.config import load
from lightning_marl.data.replay import EPISODES
from lightning_marl.experiment import run
from tests.test_resume import BASE, assert_same_training_state, final_state

ROOT = Path(__file__).resolve().parents[1]
MATRIX = ["env=matrix", "mixer=qmix", "data.warmup_episodes=8", "data.batch_size=8", "checkpoint.every_n_updates=5",
          "trainer.enable_progress_bar=false", "eval.interval_env_steps=100"]


class Payload:
    """Unpickling this creates ``marker``: what a hostile checkpoint would do with a real command."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def matrix_run(tmp_path_factory) -> Path:
    """A small finished run, in train.py's layout (its config saved)."""
    folder = tmp_path_factory.mktemp("matrix_run")
    proc = subprocess.run([sys.executable, "train.py", *MATRIX, "total_env_steps=240", f"hydra.run.dir={folder}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return folder


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_a_checkpoint_carrying_code_is_refused_and_the_code_never_runs(matrix_run, tmp_path):
    marker = tmp_path / "payload_ran"
    folder = copy_run(matrix_run, tmp_path / "run")
    state = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=False)
    state["extra"] = Payload(marker)
    for f in (folder / "checkpoints").glob("*.ckpt"):
        f.unlink()
    torch.save(state, folder / "checkpoints" / "last.ckpt")
    evaluate = subprocess.run([sys.executable, "scripts/evaluate.py", str(folder / "checkpoints" / "last.ckpt")],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
    resume = subprocess.run([sys.executable, "train.py", f"resume={folder}"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    for proc in (evaluate, resume):
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "which loading would run as code; refused (nothing was run)" in proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["empty", "truncated", "random"])
def test_an_unreadable_last_ckpt_is_named_and_resume_falls_back_to_the_newest_periodic_one(matrix_run, tmp_path,
                                                                                           damage):
    folder = copy_run(matrix_run, tmp_path / "run")
    last = folder / "checkpoints" / "last.ckpt"
    data = last.read_bytes()
    last.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "random": os.urandom(4096)}[damage])
    with pytest.raises(CheckpointError, match=f"checkpoint {last} is"):
        load_checkpoint(last)
    warnings = []
    chosen, state = choose_checkpoint(last, warn=warnings.append)
    assert chosen.name.startswith("step") and state["global_step"] == int(chosen.stem[4:])
    assert len(warnings) == 1 and str(last) in warnings[0] and f"resuming from {chosen}" in warnings[0]
    evaluate = subprocess.run([sys.executable, "scripts/evaluate.py", str(last)], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
    assert evaluate.returncode == 2 and f"error: checkpoint {last} is" in evaluate.stderr
    assert "Traceback" not in evaluate.stderr
    for f in (folder / "checkpoints").glob("step*.ckpt"):
        f.write_bytes(b"")
    with pytest.raises(CheckpointError, match="no readable checkpoint to resume from: checkpoint .*last.ckpt is"):
        choose_checkpoint(last)


def test_a_resume_that_changes_the_architecture_names_the_keys(matrix_run):
    with pytest.raises(CheckpointError, match=r"another architecture \(mixer.embed_dim: checkpoint 32, config 64\)"):
        plan_resume(str(matrix_run), [f"resume={matrix_run}", "mixer.embed_dim=64"])
    with pytest.raises(CheckpointError, match=r"agent.hidden_dim: checkpoint 64, config 32"):
        plan_resume(str(matrix_run), [f"resume={matrix_run}", "agent.hidden_dim=32"])


def test_a_checkpoint_without_its_replay_keeps_the_rest_and_continues_with_a_refilled_replay(matrix_run, tmp_path):
    """What a study keeps of a finished run with ``finished_checkpoint: without_replay``."""
    folder = copy_run(matrix_run, tmp_path / "run")
    last = folder / "checkpoints" / "last.ckpt"
    before, size = load_checkpoint(last), last.stat().st_size
    assert drop_replay(last) and not drop_replay(last)  # the second time there is none: nothing written
    after = load_checkpoint(last)
    assert "replay" in before["MARLDataModule"] and "replay" not in after["MARLDataModule"]
    assert last.stat().st_size < size
    assert after["global_step"] == before["global_step"] and after["MARLDataModule"]["rng"].keys() == \
        before["MARLDataModule"]["rng"].keys()
    assert all(after["state_dict"][k].equal(v) for k, v in before["state_dict"].items())
    assert after["optimizer_states"][0]["state"].keys() == before["optimizer_states"][0]["state"].keys()
    proc = subprocess.run([sys.executable, "train.py", f"resume={folder}", "total_env_steps=480"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "the checkpoint holds no replay" in proc.stdout + proc.stderr
    resumed = load_checkpoint(last)["MARLDataModule"]
    assert resumed["env_steps"] >= 480 and resumed["replay"]["length"] > 0  # refilled, and kept again


def test_dropping_the_replay_covers_the_other_ranks_files(tmp_path):
    ckpt, ident = tmp_path / "last.ckpt", "ab12"
    rank_file(tmp_path, ident, 1).parent.mkdir()
    torch.save({"env_steps": 7, "replay": {"obs": torch.ones(3)}}, rank_file(tmp_path, ident, 1))
    torch.save({"state_dict": {}, "hyper_parameters": {}, "global_step": 1, "MARLDataModule": {
        "env_steps": 7, "replay": {"obs": torch.ones(3)}, RANKS: {"world_size": 2, "id": ident}}}, ckpt)
    assert drop_replay(ckpt)
    own = load_checkpoint(ckpt)["MARLDataModule"]
    assert "replay" not in own and load_rank_state(ckpt, own, 1) == {"env_steps": 7}
    # the other ranks' states went to new files, named by the new checkpoint; the old ones are gone
    assert own[RANKS]["id"] != ident and not rank_file(tmp_path, ident, 1).exists()


def test_the_replay_is_stored_up_to_what_it_holds(make_config, tmp_path):
    sizes, stored = {}, {}
    for steps in (400, 1600):
        run(load(BASE + [f"total_env_steps={steps}", "data.buffer_size=5000"]), tmp_path / str(steps))
        path = tmp_path / str(steps) / "checkpoints" / "last.ckpt"
        state = load_checkpoint(path)
        replay = state["MARLDataModule"]["replay"]
        stored[steps] = state["MARLDataModule"]["episodes"]
        assert replay["length"] == stored[steps] == replay["episodes"]["obs"].shape[0]  # not the capacity of 5000
        per_episode = 0
        for tensor in replay["episodes"].values():  # saved alone, not as a view of the whole storage
            assert tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
            per_episode += tensor.numel() * tensor.element_size() / stored[steps]
        sizes[steps] = path.stat().st_size
        assert sizes[steps] < 0.25 * per_episode * 5000  # far below a checkpoint of the whole capacity
    grown = (sizes[1600] - sizes[400]) / (stored[1600] - stored[400])
    assert 0.5 * per_episode < grown < 2 * per_episode  # the file grows by the episodes added


def mapped_files(folder: Path) -> list[str]:
    """The files under ``folder`` that this process has memory-mapped (Linux: /proc/self/maps)."""
    gc.collect()
    with open("/proc/self/maps") as f:
        fields = [line.split(None, 5) for line in f]
    return sorted({f[5].strip() for f in fields if len(f) == 6 and f[5].startswith(str(folder))})


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="reads the process's mappings from /proc")
def test_reading_a_checkpoint_to_resume_maps_only_its_replay_episodes(matrix_run):
    """Lightning's restore reads the checkpoint with the replay's episodes memory-mapped (the replay copies
    them into its own storage) and all else in memory: once the episodes are dropped, nothing of the file
    stays mapped (a kept tensor, e.g. an optimizer state, would keep the whole file mapped)."""
    path = matrix_run / "checkpoints" / "last.ckpt"
    plain = torch.load(path, map_location="cpu", weights_only=True)
    restored = AtomicCheckpointIO().load_checkpoint(path, weights_only=True)
    assert mapped_files(matrix_run) == [str(path)]
    episodes = restored[DATA_STATE][REPLAY].pop(EPISODES)
    assert all(torch.equal(t, plain[DATA_STATE][REPLAY][EPISODES][k]) for k, t in episodes.items())
    plain[DATA_STATE][REPLAY].pop(EPISODES)
    assert mapped_files(matrix_run) == [str(path)]  # the episodes still hold it
    del episodes
    assert mapped_files(matrix_run) == []
    state = restored["optimizer_states"][0]["state"]
    assert state and all(torch.equal(v, plain["optimizer_states"][0]["state"][i][k])
                         for i, s in state.items() for k, v in s.items())
    assert torch.equal(restored["MARLDataModule"]["rng"]["torch"], plain["MARLDataModule"]["rng"]["torch"])


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="reads the process's mappings from /proc")
def test_a_resumed_run_keeps_no_checkpoint_file_mapped_while_it_trains(make_config, tmp_path):
    """Nothing of the checkpoint a run resumed from stays mapped once it trains: a mapped file that the
    run then replaces (its next last.ckpt) would keep using its disk space until the process ends."""
    overrides = MATRIX + ["checkpoint.every_n_updates=5"]
    run(load(overrides + ["total_env_steps=240"]), tmp_path)
    seen: list[list[str]] = []

    class Mappings(Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            seen.append(mapped_files(tmp_path))

    run(load(overrides + ["total_env_steps=480"]), tmp_path, ckpt_path=tmp_path / "checkpoints" / "last.ckpt",
        extra_callbacks=[Mappings()])
    assert len(seen) >= 10 and all(found == [] for found in seen), [found for found in seen if found][:1]


def wait_for_periodic(run_dir: Path, proc: subprocess.Popen, update: int, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        steps = [int(p.stem[4:]) for p in (run_dir / "checkpoints").glob("step*.ckpt")] \
            if (run_dir / "checkpoints").exists() else []
        if steps and max(steps) >= update:
            return
        assert proc.poll() is None, "the run ended before the signal"
        time.sleep(0.1)
    pytest.fail("no periodic checkpoint in time")


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_writes_a_checkpoint_says_how_to_resume_and_the_resumed_run_is_exact(make_config, tmp_path,
                                                                                      signum, code):
    overrides = BASE + ["total_env_steps=1600", "checkpoint.every_n_updates=10"]
    run(load(overrides), tmp_path / "full")
    run_dir = tmp_path / "stopped"
    proc = subprocess.Popen([sys.executable, "train.py", *overrides, f"hydra.run.dir={run_dir}"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_periodic(run_dir, proc, 10)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    name = signal.Signals(signum).name
    assert f"stopped by {name} after update" in err and f"continue with: train.py resume={run_dir}" in err
    assert "Traceback" not in err and "final greedy evaluation" not in out
    stopped = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert stopped["MARLDataModule"]["env_steps"] < 1600
    resumed = subprocess.run([sys.executable, "train.py", f"resume={run_dir}"], cwd=ROOT, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_training_state(final_state(tmp_path / "full"), final_state(run_dir))


def test_a_signal_during_the_last_rounds_updates_is_an_interruption_and_resumes_exactly(make_config, tmp_path,
                                                                                         monkeypatch):
    """The budget is spent once the last round is collected, but the round's updates are still to come: a run
    stopped then is not finished (its study run is resumed, not archived short of those updates)."""
    from lightning_marl.data.datamodule import MARLDataModule
    from lightning_marl.errors import Interrupted

    overrides = BASE + ["total_env_steps=400", "data.updates_per_round=4"]
    run(load(overrides), tmp_path / "full")
    sample, stopped = MARLDataModule.sample, tmp_path / "stopped"

    def signalled(self):
        if self.env_steps >= 400 and self.pending_updates == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # stops after this update: two of the round's left
        return sample(self)

    monkeypatch.setattr(MARLDataModule, "sample", signalled)
    with pytest.raises(Interrupted):
        run(load(overrides), stopped)
    monkeypatch.undo()
    assert load_checkpoint(stopped / "checkpoints" / "last.ckpt")["MARLDataModule"]["pending_updates"] == 2
    run(load(overrides), stopped, ckpt_path=stopped / "checkpoints" / "last.ckpt")
    assert_same_training_state(final_state(tmp_path / "full"), final_state(stopped))


def test_a_storm_of_sigints_during_checkpoint_writes_never_damages_last_ckpt(tmp_path):
    run_dir = tmp_path / "storm"
    proc = subprocess.Popen([sys.executable, "train.py", *BASE, "total_env_steps=100000", "checkpoint.every_n_updates=1",
                             f"hydra.run.dir={run_dir}"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    wait_for_periodic(run_dir, proc, 3)
    for _ in range(40):  # a checkpoint is written after every update: most signals land in or near a write
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGINT)
        time.sleep(0.01)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "terminate called" not in err
    state = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert state["global_step"] >= 3
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))
    assert len(list((run_dir / "checkpoints").glob("step*.ckpt"))) == 1


def test_a_moved_run_keeps_last_ckpt_current_and_its_folder_tidy(tmp_path):
    first = tmp_path / "first"
    args = [sys.executable, "train.py", *BASE, "checkpoint.every_n_updates=10"]
    done = subprocess.run(args + ["total_env_steps=600", f"hydra.run.dir={first}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    moved = tmp_path / "moved"
    first.rename(moved)
    (moved / "checkpoints" / ".last.ckpt.abc123.tmp").write_bytes(b"half a checkpoint")  # a crash's leftover
    proc = subprocess.Popen(args[:2] + [f"resume={moved}", "total_env_steps=100000"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    before = load_checkpoint(moved / "checkpoints" / "last.ckpt")["global_step"]
    try:
        wait_for_periodic(moved, proc, before + 20)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    files = sorted(p.name for p in (moved / "checkpoints").iterdir())
    periodic = [f for f in files if f.startswith("step")]
    assert not [f for f in files if "-v" in f], files  # (a kill inside a write may leave a .tmp: removed below)
    newest = max(int(f[4:-5]) for f in periodic)
    assert load_checkpoint(moved / "checkpoints" / "last.ckpt")["global_step"] >= newest - 10  # written in this folder
    assert len(periodic) <= 2  # the newest, and at most one the killed run had not removed yet
    again = subprocess.run(args[:2] + [f"resume={moved}", "total_env_steps=1200"], cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    files = sorted(p.name for p in (moved / "checkpoints").iterdir())
    assert len([f for f in files if f.startswith("step")]) == 1 and not [f for f in files if f.startswith(".")], files


def test_scripts_refuse_bad_arguments_in_one_line(matrix_run, tmp_path, capsys):
    """One case through the script's own process (exit code and stderr as a user sees them); the others
    through the same ``main`` in this process (the script is ``main()`` and nothing else), which saves
    a process start each."""
    from lightning_marl import evaluate, plot

    ckpt = str(matrix_run / "checkpoints" / "last.ckpt")
    bad_csv = tmp_path / "bad_run"
    shutil.copytree(matrix_run, bad_csv)
    (bad_csv / "metrics.csv").write_bytes(os.urandom(300))
    proc = subprocess.run([sys.executable, "scripts/evaluate.py", ckpt, "--env", "n_agents=3"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-1500:]
    assert "env.payoff has 2 dimensions for env.n_agents=3" in lines[0]
    cases = [
        (evaluate, [ckpt, "--episodes", "0"], "argument --episodes: 0 is out of range; allowed: an integer >= 1"),
        (evaluate, [ckpt, "--episodes", "-3"], "argument --episodes: -3 is out of range"),
        (evaluate, [ckpt, "--num-envs", "0"], "argument --num-envs: 0 is out of range"),
        (evaluate, [ckpt, "--env", "grid=5"], "'grid=5': not KEY=VALUE with an option of env 'matrix'"),
        (plot, [str(matrix_run), "--out", str(tmp_path / "missing" / "x.png")],
         "the folder " + str(tmp_path / "missing") + " does not exist"),
        (plot, [str(bad_csv), "--out", str(tmp_path / "x.png")], "metrics.csv is not a metrics table"),
        (plot, [str(matrix_run), "--points", "1"], "argument --points: 1 is out of range"),
    ]
    for script, argv, fragment in cases:
        with pytest.raises(SystemExit) as stopped:
            script.main(argv)
        lines = capsys.readouterr().err.strip().splitlines()
        assert stopped.value.code == 2 and len(lines) == 1 and fragment in lines[0], (argv, lines)
    assert not (tmp_path / "x.png").exists()


def test_plot_refuses_runs_of_different_lengths_unless_truncated(matrix_run, tmp_path):
    short = tmp_path / "runs" / "short"
    shutil.copytree(matrix_run, short)
    shutil.copytree(matrix_run, tmp_path / "runs" / "long")
    frame = pd.read_csv(short / "metrics.csv")
    frame[frame["env_steps"] <= 120].to_csv(short / "metrics.csv", index=False)
    out = tmp_path / "curves.png"
    refused = subprocess.run([sys.executable, "scripts/plot.py", str(tmp_path / "runs"), "--out", str(out)], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "end at different env steps" in refused.stderr and str(short) in refused.stderr
    cut = subprocess.run([sys.executable, "scripts/plot.py", str(tmp_path / "runs"), "--out", str(out), "--truncate"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert cut.returncode == 0 and "warning: the runs of qmix end at different env steps" in cut.stderr
    assert out.is_file()
