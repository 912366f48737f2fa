"""Every logger gets its metrics against env steps: metrics.csv keeps both the update index and the
env steps, TensorBoard and MLflow use env steps as their step, W&B (offline) writes its run files;
a resumed run continues its MLflow run."""
import json

import pandas as pd
import pytest

from lightning_marl.config import compose
from lightning_marl.config.validate import to_typed
from lightning_marl.experiment import run

RUN = ["env=matrix", "mixer=qmix", "data.warmup_episodes=8", "data.batch_size=8", "checkpoint.every_n_updates=20",
       "eval.interval_env_steps=200", "eval.episodes=4", "trainer.enable_progress_bar=false",
       "trainer.log_every_n_steps=5"]


def train(folder, *overrides, ckpt=None):
    return run(to_typed(compose([*RUN, *overrides])), folder, ckpt_path=ckpt)


def evaluations(folder) -> pd.DataFrame:
    return pd.read_csv(folder / "metrics.csv").dropna(subset=["test/return_mean"])


def test_csv_keeps_the_update_index_and_the_env_steps(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(tmp_path, "total_env_steps=600", "logger=[csv,tensorboard]")
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    rows = metrics.dropna(subset=["loss"])
    assert len(rows) >= 3
    assert list(rows["step"]) == [4 + 5 * i for i in range(len(rows))]  # updates 5, 10, ... (index 4, 9, ...)
    assert rows["env_steps"].is_monotonic_increasing and rows["env_steps"].iloc[0] > 0
    events = EventAccumulator(str(tmp_path)).Reload()
    tb = events.Scalars("test/return_mean")
    assert [e.step for e in tb] == [int(s) for s in evaluations(tmp_path)["env_steps"]]
    assert [e.step for e in events.Scalars("loss")] == [int(s) for s in rows["env_steps"]]


@pytest.mark.parametrize("store", ["sqlite", "file"])
def test_mlflow_reads_back_the_runs_metrics_against_env_steps_and_a_resume_continues_its_run(tmp_path, monkeypatch,
                                                                                             store):
    """MLflow's default store (SQLite) and its file store (retired in MLflow 3: allowed by an env variable)."""
    mlflow = pytest.importorskip("mlflow")
    if store == "file":
        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}" if store == "sqlite" else f"file:{tmp_path / 'mlruns'}"
    folder = tmp_path / "run"
    logger = ["logger=[csv,mlflow]", f"logger.mlflow.tracking_uri={uri}", "logger.mlflow.experiment_name=test"]
    train(folder, "total_env_steps=400", *logger)
    train(folder, "total_env_steps=800", *logger, ckpt=folder / "checkpoints" / "last.ckpt")
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["test"])
    assert len(runs) == 1  # the resumed session logged into the same MLflow run
    run_id = runs["run_id"][0]
    assert json.loads((folder / "logger_ids.json").read_text())["mlflow"] == run_id
    expected = evaluations(folder)
    assert runs["metrics.test/return_mean"][0] == pytest.approx(expected["test/return_mean"].iloc[-1])
    assert runs["params.mixer/name"][0] == "qmix" and runs["params.total_env_steps"][0] == "400"
    history = mlflow.MlflowClient(uri).get_metric_history(run_id, "test/return_mean")
    assert sorted(m.step for m in history) == [int(s) for s in expected["env_steps"]]
    assert max(m.step for m in history) >= 800


def test_wandb_offline_writes_its_run_files_against_env_steps(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    folder = tmp_path / "run"
    train(folder, "total_env_steps=400", "logger=[csv,wandb]", "logger.wandb.mode=offline",
          "logger.wandb.project=test")
    run_id = json.loads((folder / "logger_ids.json").read_text())["wandb"]
    runs = list((folder / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(runs) == 1
    records = (runs[0] / f"run-{run_id}.wandb").read_bytes()  # W&B's record file, to `wandb sync` later
    logs = runs[0] / "logs" / "debug-internal.log"  # seen once in a full suite under load: the header only
    for text in (b"total_env_steps", b"qmix", b"test/return_mean", b"loss",
                 b"env_steps"):
        assert text in records, (len(records), logs.read_text()[-3000:] if logs.is_file() else "no debug-internal.log")


def test_a_resume_from_an_earlier_checkpoint_leaves_one_tensorboard_curve(tmp_path):
    """A crash after a checkpoint: the resumed run logs the same env steps again; TensorBoard drops
    its old events from the checkpoint's env step on (purge_step), so each step appears once."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = ["logger=[csv,tensorboard]", "checkpoint.keep_all=true", "eval.interval_env_steps=100"]
    train(tmp_path, "total_env_steps=600", *logger)
    earlier = tmp_path / "checkpoints" / "step20.ckpt"
    train(tmp_path, "total_env_steps=600", *logger, ckpt=earlier)
    steps = [e.step for e in EventAccumulator(str(tmp_path)).Reload().Scalars("test/return_mean")]
    assert steps == sorted(set(steps)) and steps[-1] >= 600
    assert steps == [int(s) for s in evaluations(tmp_path)["env_steps"]]
