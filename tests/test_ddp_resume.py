"""DDP with 2 CPU ranks (gloo): every rank's data state (replay, RNG states, counters) is checkpointed
and restored to that rank, so a run stopped by SIGTERM and killed by SIGKILL at random points ends
bitwise equal to the same run uninterrupted, on each rank; two node processes on localhost
(``trainer.num_nodes=2``) run the same training as one node with two processes; a job whose tasks start
as ``srun`` starts them, and a 2-task submitit job requeued after SIGUSR2, continue their run in its folder."""
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lightning_marl.checkpoint_files import DATA_STATE, load_checkpoint, load_rank_state

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ["env=box_pushing", "env.horizon=20", "mixer=qmix", "seed=3", "trainer.accelerator=cpu",
            "trainer.strategy=ddp", "data.num_envs=4", "data.batch_size=8", "data.warmup_episodes=8",
            "total_env_steps=1600", "eval.episodes=4", "eval.num_envs=4", "eval.interval_env_steps=400",
            "trainer.enable_progress_bar=false", "learner.target_update_interval=8", "checkpoint.every_n_updates=1"]
ONE_NODE = ["trainer.devices=2"]
CLEAN_ENV = {k: v for k, v in os.environ.items()
             if k not in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GLOBAL_RANK")}


def start(args: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, env=env or CLEAN_ENV)


def give_up(proc: subprocess.Popen, why: str, logs: Path | None = None) -> None:
    """Kill a stalled run with all its processes (its ranks, a submitit controller and its tasks: one
    session) and fail the test with its stderr and the tails of the logs under ``logs`` (its tasks')."""
    os.killpg(proc.pid, signal.SIGKILL)
    _, err = proc.communicate()
    tails = "".join(f"\n--- {p}\n{p.read_text(errors='replace')[-1500:]}"
                    for p in sorted(logs.rglob("*") if logs else []) if p.suffix in (".err", ".log") and p.is_file())
    pytest.fail(f"{why}: {err[-1500:]}{tails}")


def finish(proc: subprocess.Popen, expected: int = 0, logs: Path | None = None) -> None:
    """Wait for a run's end; one that hangs past 400 s fails the test (:func:`give_up`)."""
    try:
        _, err = proc.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        give_up(proc, "the run did not end in 400 s", logs)
    assert proc.returncode == expected, err[-3000:]


def step_of(run_dir: Path) -> int:
    try:
        return int(load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"])
    except Exception:  # noqa: BLE001 - not written yet
        return -1


def wait_for_update(proc: subprocess.Popen, run_dir: Path, update: int, seconds: float = 400) -> None:
    deadline = time.time() + seconds
    while step_of(run_dir) < update:
        assert proc.poll() is None, f"the run ended before update {update}: {proc.stderr.read()[-2000:]}"
        if time.time() > deadline:  # a run that stalls fails the test, never hangs the suite
            give_up(proc, f"the run did not reach update {update} in {seconds:.0f} s (at {step_of(run_dir)})")
        time.sleep(0.05)


def ranks_state(run_dir: Path) -> tuple[dict, list[dict]]:
    """The final checkpoint, and each rank's data-module state."""
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    state = load_checkpoint(ckpt)
    data = state[DATA_STATE]
    return state, [load_rank_state(ckpt, data, r) for r in range(data["ranks"]["world_size"])]


def flat(tree, prefix=""):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from flat(v, f"{prefix}/{k}")
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            yield from flat(v, f"{prefix}/{i}")
    else:
        yield prefix, tree


def equal(a, b) -> bool:
    return torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


def differences(a: dict, b: dict) -> list[str]:
    fa, fb = dict(flat(a)), dict(flat(b))
    return sorted(k for k in set(fa) | set(fb) if k not in fa or k not in fb or not equal(fa[k], fb[k]))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The 2-rank run, uninterrupted."""
    run_dir = tmp_path_factory.mktemp("ddp") / "uninterrupted"
    finish(start(SETTINGS + ONE_NODE + [f"hydra.run.dir={run_dir}"]))
    return run_dir


def assert_same_run(a_dir: Path, b_dir: Path) -> None:
    (a, a_ranks), (b, b_ranks) = ranks_state(a_dir), ranks_state(b_dir)
    assert a["global_step"] == b["global_step"] > 0
    assert not differences(a["state_dict"], b["state_dict"])
    assert not differences(a["optimizer_states"], b["optimizer_states"])
    assert len(a_ranks) == len(b_ranks) == 2
    for rank, (ra, rb) in enumerate(zip(a_ranks, b_ranks)):
        assert ra["replay"]["length"] > 0
        diff = [k for k in differences(ra, rb) if k != "/ranks/id"]  # (the id of the checkpoint written)
        assert not diff, f"rank {rank}: {diff[:10]}"


def test_each_rank_checkpoints_its_own_replay(reference):
    _, (rank0, rank1) = ranks_state(reference)
    assert rank0["env_steps"] >= 1600 and rank1["env_steps"] >= 1600
    assert not torch.equal(rank0["replay"]["episodes"]["action"], rank1["replay"]["episodes"]["action"])
    assert not torch.equal(rank0["rng"]["torch"], rank1["rng"]["torch"])
    files = list((reference / "checkpoints" / "rank_states").glob("*.pt"))
    assert len(files) == 2  # one for last.ckpt, one for the newest step<N>.ckpt: older ones pruned


def test_stopped_and_killed_2_rank_run_resumes_bitwise_equal_on_every_rank(reference, tmp_path):
    rng = random.Random(20261205)
    run_dir = tmp_path / "interrupted"
    proc = start(SETTINGS + ONE_NODE + [f"hydra.run.dir={run_dir}"])
    wait_for_update(proc, run_dir, rng.randint(2, 7))
    time.sleep(rng.uniform(0, 0.5))
    os.kill(proc.pid, signal.SIGTERM)  # to rank 0 only: rank 1 stops after the same update
    finish(proc, 128 + signal.SIGTERM)
    stopped_at = step_of(run_dir)

    proc = start([f"resume={run_dir}"])
    wait_for_update(proc, run_dir, stopped_at + rng.randint(3, 8))
    time.sleep(rng.uniform(0, 0.5))
    os.killpg(proc.pid, signal.SIGKILL)  # both ranks, anywhere (inside a checkpoint write, too)
    proc.wait()

    finish(start([f"resume={run_dir}"]))
    assert_same_run(reference, run_dir)
    assert not list((run_dir / "checkpoints").rglob(".*.tmp"))
    assert len(list((run_dir / "checkpoints" / "rank_states").glob("*.pt"))) == 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_on_localhost_train_as_one_node_with_two_processes(reference, tmp_path):
    run_dir = tmp_path / "two_nodes"
    args = SETTINGS + ["trainer.devices=1", "trainer.num_nodes=2", f"hydra.run.dir={run_dir}"]
    port = free_port()
    nodes = [start(args, {**CLEAN_ENV, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "NODE_RANK": str(n)})
             for n in (0, 1)]
    for node in nodes:
        finish(node)
    assert_same_run(reference, run_dir)


def test_several_nodes_need_one_run_folder_named(tmp_path):
    proc = subprocess.run([sys.executable, "train.py", *SETTINGS, "trainer.devices=1", "trainer.num_nodes=2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, env=CLEAN_ENV)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: hydra.run.dir is not set: a run whose processes start separately (trainer.num_nodes > 1, torchrun, "
        "srun) needs one folder for all of them; allowed: hydra.run.dir=<folder>, the same in every process's command"]


@pytest.mark.parametrize("devices", [1, 3])
def test_resuming_with_another_number_of_ranks_is_refused(reference, devices):
    before = sorted(p.relative_to(reference) for p in reference.rglob("*"))
    proc = subprocess.run([sys.executable, "train.py", f"resume={reference}", f"trainer.devices={devices}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, env=CLEAN_ENV)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: checkpoint {reference}/checkpoints/last.ckpt holds the data (replay, games, RNG states) of 2 "
        f"rank(s) and this run has {devices}; allowed: resume with 2 rank(s) (trainer.devices x trainer.num_nodes "
        "= 2)"]
    assert sorted(p.relative_to(reference) for p in reference.rglob("*")) == before  # nothing written


def test_a_checkpoint_without_its_rank_files_is_not_used(reference, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(reference, copy)
    shutil.rmtree(copy / "checkpoints" / "rank_states")
    proc = subprocess.run([sys.executable, "train.py", f"resume={copy}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=CLEAN_ENV)
    assert proc.returncode == 2
    assert "lacks the data of its other ranks" in proc.stderr and "rank_states" in proc.stderr


def test_the_rank_lightning_starts_writes_into_the_same_default_run_folder(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *SETTINGS, *ONE_NODE, "total_env_steps=200"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=400, env=CLEAN_ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [p for p in (tmp_path / "outputs").glob("*/*") if p.is_dir()]
    assert len(runs) == 1  # not a second folder (with suffix -2) made by rank 1
    checkpoints = list((runs[0] / "checkpoints").glob("*.ckpt"))  # last.ckpt and the newest step<N>.ckpt
    assert len(list((runs[0] / "checkpoints" / "rank_states").glob("*.rank1.pt"))) == len(checkpoints) == 2


def srun(args: list[str], port: int) -> list[subprocess.Popen]:
    """Two tasks of one node as ``srun`` starts them (the variables Lightning's SLURM environment reads)."""
    env = {**CLEAN_ENV, "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NODEID": "0", "SLURM_JOB_ID": "4242",
           "SLURM_JOB_NAME": "train", "SLURM_NODELIST": "localhost", "SLURM_JOB_NUM_NODES": "1",
           "MASTER_PORT": str(port)}
    return [start(args, {**env, "SLURM_PROCID": str(r), "SLURM_LOCALID": str(r)}) for r in (0, 1)]


def test_a_slurm_job_stopped_before_its_time_limit_continues_in_its_folder(reference, tmp_path):
    run_dir = tmp_path / "slurm"
    tasks = srun(SETTINGS + ONE_NODE + [f"hydra.run.dir={run_dir}"], free_port())
    wait_for_update(tasks[0], run_dir, random.Random(7).randint(3, 9))
    for task in tasks:
        task.send_signal(signal.SIGUSR2)  # SLURM signals every task before the time limit
    for task in tasks:
        finish(task, 128 + signal.SIGUSR2)
    # the job again (requeued, or resubmitted), continuing its run
    for task in srun([f"resume={run_dir}", f"hydra.run.dir={run_dir}/resumed/requeued"], free_port()):
        finish(task)
    assert_same_run(reference, run_dir)


def test_a_2_task_submitit_job_requeued_continues_in_its_folder(reference, tmp_path):
    """``hydra.launcher.tasks_per_node=2`` under submitit's local executor: each task is one rank. SIGUSR2 (as SLURM,
    and submitit's controller before its time limit, send it to every task) reaching rank 1 first, here rank 1 only,
    stops both ranks after the same update with the checkpoint and both ranks' files, and with rank 1's signal, so
    rank 0 calls submitit's handler, which requeues the job; its two tasks continue the run in its folder."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    proc = start(["-m", "hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2", f"hydra.sweep.dir={sweep}",
                  *SETTINGS, *ONE_NODE])
    run_dir = sweep / "box_pushing_qmix_s3_0"
    wait_for_update(proc, run_dir, random.Random(11).randint(3, 9))
    tasks = [int(pid) for pid in subprocess.run(["pgrep", "-f", f"submitit.core._submit {sweep}"],
                                                 capture_output=True, text=True).stdout.split()]
    assert len(tasks) == 2, tasks  # the job's two tasks, no rank started by Lightning
    environ = {pid: Path(f"/proc/{pid}/environ").read_text().split("\0") for pid in tasks}
    rank1 = next(pid for pid, env in environ.items() if "SUBMITIT_LOCAL_GLOBALID=1" in env)
    os.kill(rank1, signal.SIGUSR2)
    finish(proc, logs=sweep)
    log = (run_dir / "train.log").read_text()
    assert log.count("stopped by SIGUSR2") == 2 and "Requeued job" in log  # both ranks: rank 1's signal
    assert log.count("continuing this job's run from") == 2  # each rank, in the same job folder
    assert len(list((sweep / ".submitit").glob("*/*_result.pkl"))) == 2  # one job: both tasks finished
    assert_same_run(reference, run_dir)
