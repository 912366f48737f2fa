"""DDP on 2 CPU processes (gloo): same number of optimizer steps, parameters in sync, own envs per rank."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def test_ddp_two_cpu_processes_stay_in_sync(tmp_path):
    proc = subprocess.run([sys.executable, "tests/ddp_probe.py", str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1))
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["global_step"] == r1["global_step"] > 0
    assert r0["optimizer_steps"] == r1["optimizer_steps"] == r0["global_step"]
    assert r0["params"] == r1["params"]  # gradients averaged: identical weights on both ranks
    assert r0["first_actions"] != r1["first_actions"]  # each rank explores its own envs (seed offset)
    assert (tmp_path / "run" / "metrics.csv").exists()


def test_ddp_logs_to_mlflow_from_rank_zero_only(tmp_path):
    """Every rank builds the loggers; only rank zero has an MLflow client (the others must not use it)."""
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.run([sys.executable, "tests/ddp_probe.py", str(tmp_path), "logger=[csv,mlflow]",
                           f"logger.mlflow.tracking_uri={uri}", "logger.mlflow.experiment_name=ddp"],
                          cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["ddp"])
    assert len(runs) == 1 and runs["params.trainer/devices"][0] == "2"
    assert runs["metrics.test/return_mean"].notna().all()


def test_collector_workers_explore_differently_on_each_rank():
    """With data.collector_processes each rank's workers seed their games and exploration apart."""
    from types import SimpleNamespace

    from lightning_marl.config import compose, validate
    from lightning_marl.config.schema import AgentConfig
    from lightning_marl.data.datamodule import MARLDataModule
    from lightning_marl.models.agent import RNNAgent
    from lightning_marl.models.policy import RecurrentPolicy

    actions = []
    for rank in (0, 1):
        dm = MARLDataModule(validate(compose(["env=matrix", "data.num_envs=16", "seed=3", "data.collector_processes=2",
                                              "data.start_method=fork"])))
        info = dm.env_info()
        agent = RNNAgent.from_config(AgentConfig(), info["obs_dim"], info["n_agents"], info["n_actions"])
        policy = RecurrentPolicy(agent, 1.0)
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=1, lightning_module=SimpleNamespace(
            acting_policy=lambda policy=policy: policy))
        dm.setup("fit")
        try:
            dm.collect_round()
            dm.collect_round()
        finally:
            dm.teardown()
        episodes = dm.replay.buffer.storage[: len(dm.replay)]
        actions.append(episodes["action"][:, 0])
    assert actions[0].shape == (16, 2)
    assert not torch.equal(actions[0], actions[1])
