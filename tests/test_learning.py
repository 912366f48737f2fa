"""End-to-end: python train.py on a matrix game learns the optimal joint action."""
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from lightning_marl.config import load
from lightning_marl.experiment import run

ROOT = Path(__file__).resolve().parents[1]


def test_vdn_learns_the_optimum_of_a_decomposable_matrix_game(make_config, tmp_path):
    cfg = load(["env=matrix", "env.game=additive", "mixer=vdn", "seed=0", "total_env_steps=3000",
                       "learner.epsilon_anneal_steps=1000", "eval.interval_env_steps=1000",
                       "trainer.enable_progress_bar=false"])
    result = run(cfg, tmp_path)
    assert result["final"]["test/return_mean"] == pytest.approx(5.0)  # optimum u[1] + v[2]
    metrics = pd.read_csv(result["metrics_csv"])
    tests = metrics.dropna(subset=["test/return_mean"])
    assert len(tests) >= 3 and tests["test/return_mean"].iloc[0] < 5.0  # it learned, it did not start there
    for column in ("env_steps", "episodes", "train/td_error_abs", "train/q_taken_mean", "train/grad_norm",
                   "epsilon", "train/return", "env_steps_per_s", "loss"):
        assert column in metrics.columns, column
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_a_feed_forward_vdn_learns_from_sampled_transitions(make_config, tmp_path):
    """data.sample=transitions (BenchMARL's unit): batches of single steps train as whole episodes do."""
    cfg = load(["env=matrix", "env.game=additive", "mixer=vdn", "seed=0", "total_env_steps=3000",
                "learner.epsilon_anneal_steps=1000", "eval.interval_env_steps=1000", "data.sample=transitions",
                "data.batch_size=64", "agent.recurrent=false", "agent.last_action=false", "learner.td_lambda=0",
                "trainer.enable_progress_bar=false"])
    result = run(cfg, tmp_path)
    assert result["final"]["test/return_mean"] == pytest.approx(5.0)
    tests = pd.read_csv(result["metrics_csv"]).dropna(subset=["test/return_mean"])
    assert tests["test/return_mean"].iloc[0] < 5.0


def run_train(*overrides):
    return subprocess.run([sys.executable, "train.py", *overrides, "hydra.run.dir=${oc.env:TMPDIR,/tmp}/lm_bad"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_train_py_rejects_an_unknown_mixer_with_the_list():
    proc = run_train("mixer=qmax")
    assert proc.returncode == 2
    assert "error: mixer=qmax is not an option; allowed: duelmix, qfix_lin, qfix_mono, qfix_sum, qmix" in proc.stderr


def test_collector_processes_learn_and_stop_their_workers(make_config, tmp_path):
    import multiprocessing

    cfg = load(["env=matrix", "env.game=additive", "mixer=vdn", "seed=2", "total_env_steps=3000",
                       "learner.epsilon_anneal_steps=1000", "eval.interval_env_steps=1000",
                       "data.collector_processes=2", "data.num_envs=8", "data.start_method=fork",
                       "trainer.enable_progress_bar=false"])
    result = run(cfg, tmp_path)
    assert result["final"]["test/return_mean"] == pytest.approx(5.0)
    assert result["env_steps"] >= 3000
    metrics = pd.read_csv(result["metrics_csv"])
    # the workers act with the published weights and epsilon: late training episodes are near-optimal
    # (a uniformly random joint action returns 7/3 on average)
    assert metrics["train/return"].dropna().iloc[-5:].mean() > 4.0
    assert not multiprocessing.active_children()


def test_qfix_intervention_annealing_runs_in_training_and_reaches_one(make_config, tmp_path):
    cfg = load(["env=matrix", "mixer=qfix_sum", "total_env_steps=600", "learner.intervention_anneal_steps=400",
                       "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false"])
    run(cfg, tmp_path)
    lam = pd.read_csv(tmp_path / "metrics.csv")["intervention"].dropna()
    assert lam.iloc[0] < 0.5 and lam.iloc[-1] == pytest.approx(1.0) and lam.is_monotonic_increasing


@pytest.mark.slow
def test_default_box_pushing_job_learns_to_deliver_boxes(make_config, tmp_path):
    """The default job (Box Pushing 4x4, QFIX-sum, 100k env steps, seed 0): greedy return starts at
    -10 (no box) and must end above 9 (at least one box home). ~2.5 min on 2 cores."""
    cfg = load(["trainer.enable_progress_bar=false"])
    result = run(cfg, tmp_path)
    tests = pd.read_csv(result["metrics_csv"]).dropna(subset=["test/return_mean"])
    assert tests["test/return_mean"].iloc[0] < 0
    assert result["final"]["test/return_mean"] > 9.0


@pytest.mark.slow
def test_big_box_recipe_learns_the_big_box_plan(make_config, tmp_path):
    """experiment=box_pushing_4x4_big_box (DuelMIX, prioritized replay, optimistic weighting), seed 0,
    stopped at 150k of its 600k steps (its schedules do not depend on the budget, so this is the
    full run's path): the greedy episode pushes the big box (return 99.6 = the optimum in the
    measured run, docs/results/box_pushing_big_box.md). ~5 min on 2 cores."""
    cfg = load(["experiment=box_pushing_4x4_big_box", "seed=0", "total_env_steps=150000",
                       "checkpoint.replay=false", "trainer.enable_progress_bar=false"])
    result = run(cfg, tmp_path)
    assert result["final"]["test/big_box_mean"] == 1.0 and result["final"]["test/return_mean"] > 90.0


IGM_COMPLETE = ["qplex", "duelmix", "qfix_sum", "qfix_mono", "qplusfix_sum", "qplusfix_mono", "qplusfix_lin",
                pytest.param("qfix_lin", marks=pytest.mark.xfail(
                    strict=True, reason="measured 3 of 5 seeds (docs/results/matrix_non_monotonic.md); kept to notice a change"))]


@pytest.mark.slow
@pytest.mark.parametrize("mixer", IGM_COMPLETE)
def test_igm_complete_mixer_finds_the_non_monotonic_optimum_with_optimistic_weighting(make_config, tmp_path, mixer):
    """The default matrix budget (10k env steps, epsilon 1 -> 0.05 over 2k) with
    learner.td_weighting=optimistic, seeds 0-4: the greedy joint action is the optimum (payoff 8) in at
    least 4 of 5 seeds. ~3 min per mixer on 2 cores."""
    reached = 0
    for seed in range(5):
        cfg = load(["env=matrix", "env.game=non_monotonic", f"mixer={mixer}", f"seed={seed}",
                           "learner.td_weighting=optimistic", "trainer.enable_progress_bar=false"])
        reached += run(cfg, tmp_path / f"s{seed}")["final"]["test/return_mean"] == pytest.approx(8.0)
    assert reached >= 4
