"""Many seeds: the joblib launcher (parallel on one machine) and submitit (a cluster, or its local
stand-in) run every job of a sweep to its end in a folder of its own, inside one sweep folder; a
job stopped by the scheduler's signal and requeued continues from its checkpoint."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from lightning_marl.cli.overrides import check_launcher
from lightning_marl.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
JOB = ["env=matrix", "mixer=qmix", "data.warmup_episodes=8", "data.batch_size=8", "eval.interval_env_steps=200",
       "eval.episodes=4", "trainer.enable_progress_bar=false"]


def multirun(tmp_path: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def finished_runs(tmp_path: Path, budget: int) -> list[Path]:
    """The run folders of the one sweep folder under tmp_path/multirun, each checked to have finished."""
    sweeps = [p for p in (tmp_path / "multirun").glob("*/*") if p.is_dir()]
    assert len(sweeps) == 1, sweeps  # every job in the same sweep folder
    runs = sorted(p for p in sweeps[0].iterdir() if (p / "metrics.csv").is_file())
    for run in runs:
        tests = pd.read_csv(run / "metrics.csv").dropna(subset=["test/return_mean"])
        assert tests["env_steps"].max() >= budget and (run / "checkpoints" / "last.ckpt").is_file()
    return runs


def test_joblib_runs_two_seeds_each_in_its_own_folder(tmp_path):
    jobs = [a for a in JOB if a != "trainer.enable_progress_bar=false"]
    proc = multirun(tmp_path, "hydra/launcher=joblib", *jobs, "total_env_steps=400", "seed=0,1")
    runs = finished_runs(tmp_path, 400)
    assert [r.name for r in runs] == ["matrix_qmix_s0_0", "matrix_qmix_s1_1"]
    # jobs in parallel share the console: no progress bars overwriting each other, and the runs say so
    assert " env steps |" not in proc.stdout
    for run in runs:
        assert "progress bar off" in (run / "train.log").read_text()


def test_submitit_local_runs_two_seeds_each_in_its_own_folder(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    multirun(tmp_path, "hydra/launcher=submitit_local", *JOB, "total_env_steps=400", "seed=0,1")
    runs = finished_runs(tmp_path, 400)
    assert [r.name for r in runs] == ["matrix_qmix_s0_0", "matrix_qmix_s1_1"]


def test_the_slurm_launcher_composes_with_requeueing():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    proc = subprocess.run([sys.executable, "train.py", "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                           "hydra.launcher.gpus_per_node=1", "hydra.launcher.timeout_min=600", "--cfg", "hydra"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    launcher = proc.stdout.split("\n  launcher:\n", 1)[1].split("\n  sweeper:", 1)[0]
    for line in ("_target_: hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
                 "partition: gpu", "gpus_per_node: 1", "timeout_min: 600", "max_num_timeout: 10",
                 "signal_delay_s: 120"):
        assert line in launcher, launcher


def test_a_requeued_job_continues_from_its_checkpoint(tmp_path):
    """SIGUSR2 (what SLURM sends before a time limit) to a submitit job: the run writes its checkpoint,
    submitit requeues the job, and the job continues its run to the budget."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    args = [sys.executable, str(ROOT / "train.py"), "-m", "hydra/launcher=submitit_local", f"hydra.sweep.dir={sweep}",
            *JOB, "total_env_steps=3000", "checkpoint.every_n_updates=20", "seed=0"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = sweep / "matrix_qmix_s0_0"
    deadline = time.time() + 120
    while not list((run / "checkpoints").glob("step*.ckpt")) if (run / "checkpoints").exists() else True:
        assert time.time() < deadline and proc.poll() is None, "no periodic checkpoint"
        time.sleep(0.2)
    job = subprocess.run(["pgrep", "-f", f"submitit.core._submit {sweep}"], capture_output=True, text=True)
    os.kill(int(job.stdout.split()[0]), signal.SIGUSR2)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-2000:] + err[-2000:]
    log = (run / "train.log").read_text()
    assert "stopped by SIGUSR2" in log and "Requeued job" in log
    assert "continuing this job's run from" in log
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics.dropna(subset=["test/return_mean"])["env_steps"].max() >= 3000
    train = metrics.dropna(subset=["loss"])["step"]
    assert train.is_monotonic_increasing and train.is_unique  # one stream, the stopped part not repeated


RANK_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK")


def job_environment(monkeypatch, **variables: str) -> None:
    """This process as a task of a submitit job (the variables submitit's executor sets), with no rank variables
    and no SLURM ones but those given; all of them restored after the test."""
    for name in (*RANK_VARIABLES, *(k for k in os.environ if k.startswith(("SLURM_", "SUBMITIT_")))):
        monkeypatch.setenv(name, "")  # (recorded, so that the test's own exports are undone too)
        monkeypatch.delenv(name)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)


def test_each_task_of_a_local_submitit_job_is_one_rank(monkeypatch):
    """Submitit's local executor gives its tasks their ranks in its own variables only: they are exported as
    torch.distributed's (which Lightning reads, taking the tasks as its ranks); a job whose tasks are not the
    run's ranks is refused. tests/test_ddp_resume.py runs such a job, stopped by SIGUSR2 and requeued."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from lightning_marl.cli.requeue import submitit_ranks
    from lightning_marl.config.schema import TrainerConfig

    job_environment(monkeypatch, SUBMITIT_EXECUTOR="local", SUBMITIT_LOCAL_JOB_ID="4242", SUBMITIT_LOCAL_NTASKS="2",
                    SUBMITIT_LOCAL_JOB_NUM_NODES="1", SUBMITIT_LOCAL_NODEID="0", SUBMITIT_LOCAL_GLOBALID="1",
                    SUBMITIT_LOCAL_LOCALID="1", MASTER_PORT="29517")
    with pytest.raises(ConfigError) as refused:
        submitit_ranks(TrainerConfig(strategy="ddp"))
    assert str(refused.value) == ("trainer.devices=1 is not this submitit job's number of tasks per node (2; each task "
                                  "is one rank); allowed: trainer.devices=2, or hydra.launcher.tasks_per_node=1")
    assert "RANK" not in os.environ
    submitit_ranks(TrainerConfig(devices=2, strategy="ddp"))
    assert {k: os.environ.get(k) for k in RANK_VARIABLES} == {
        "MASTER_ADDR": socket.gethostname(), "MASTER_PORT": "29517", "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "2", "NODE_RANK": "0"}


def test_the_tasks_of_a_slurm_job_keep_slurms_ranks(monkeypatch):
    """Under SLURM, Lightning reads each task's rank from SLURM's variables: nothing is exported; the run's ranks
    must still be the job's tasks (``hydra.launcher.tasks_per_node`` and ``hydra.launcher.nodes``)."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from lightning_marl.cli.requeue import submitit_ranks
    from lightning_marl.config.schema import TrainerConfig

    job_environment(monkeypatch, SUBMITIT_EXECUTOR="slurm", SLURM_JOB_ID="4242", SLURM_JOB_NAME="train",
                    SLURM_NTASKS="4", SLURM_NTASKS_PER_NODE="2", SLURM_JOB_NUM_NODES="2", SLURM_NODEID="1",
                    SLURM_PROCID="3", SLURM_LOCALID="1", SLURM_JOB_NODELIST="node[1-2]")
    submitit_ranks(TrainerConfig(devices=2, num_nodes=2, strategy="ddp"))
    assert not any(k in os.environ for k in RANK_VARIABLES)
    with pytest.raises(ConfigError, match=r"^trainer.num_nodes=1 is not this submitit job's number of nodes \(2\); "
                                          r"allowed: trainer.num_nodes=2, or hydra.launcher.nodes=1$"):
        submitit_ranks(TrainerConfig(devices=2, strategy="ddp"))


def test_a_launcher_whose_plugin_is_missing_is_refused_with_its_install_line(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ConfigError, match=r"hydra/launcher=slurm needs a Hydra plugin.*lightning_marl\[slurm\]"):
        check_launcher(["hydra/launcher=slurm", "seed=0,1"])


def test_a_new_sweep_never_trains_over_an_old_run_in_its_folder(tmp_path):
    """Outside a requeued submitit job, a job folder that holds a run is refused (exit 2, the run kept)."""
    args = [sys.executable, str(ROOT / "train.py"), "-m", f"hydra.sweep.dir={tmp_path / 'sweep'}", *JOB,
            "total_env_steps=100", "seed=0"]
    first = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    metrics = (tmp_path / "sweep" / "matrix_qmix_s0_0" / "metrics.csv").read_text()
    again = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "holds a run already" in again.stderr and "Traceback" not in again.stderr
    assert (tmp_path / "sweep" / "matrix_qmix_s0_0" / "metrics.csv").read_text() == metrics
