"""scripts/evaluate.py on a saved checkpoint, scripts/plot.py on a real (small) multirun."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAST = ["env=matrix", "env.game=additive", "total_env_steps=400", "learner.epsilon_anneal_steps=200",
        "eval.interval_env_steps=100", "eval.episodes=8", "trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def multirun(tmp_path_factory):
    sweep = tmp_path_factory.mktemp("multirun")
    proc = subprocess.run([sys.executable, "train.py", "-m", "seed=0,1", "mixer=vdn,qmix", *FAST,
                           f"hydra.sweep.dir={sweep}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep


def test_multirun_writes_one_folder_per_run(multirun):
    runs = sorted(p.parent for p in multirun.rglob("metrics.csv"))
    assert len(runs) == 4
    assert all((run / "checkpoints" / "last.ckpt").exists() and (run / ".hydra" / "config.yaml").exists()
               for run in runs)


def test_evaluate_reports_return_with_an_interval(multirun):
    ckpt = next(multirun.rglob("last.ckpt"))
    proc = subprocess.run([sys.executable, "scripts/evaluate.py", str(ckpt), "--episodes", "16", "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["episodes"] == 16
    # a greedy policy in a one-step deterministic game returns one payoff: zero-width interval
    assert result["return"]["ci95"] == 0.0 and result["return"]["mean"] in {1, 0, 3, 2, 5, 4}
    assert result["length"]["mean"] == 1.0


def test_evaluate_gif_names_the_env_it_cannot_draw(multirun, tmp_path):
    ckpt = next(multirun.rglob("last.ckpt"))
    proc = subprocess.run([sys.executable, "scripts/evaluate.py", str(ckpt), "--episodes", "2", "--gif",
                           str(tmp_path / "x.gif")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "'matrix'" in proc.stderr and "--render" in proc.stderr
    assert not (tmp_path / "x.gif").exists()


def test_plot_makes_a_png_and_a_summary_per_mixer(multirun, tmp_path):
    out = tmp_path / "curves.png"
    proc = subprocess.run([sys.executable, "scripts/plot.py", str(multirun), "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    lines = proc.stdout.splitlines()
    assert any(line.startswith("qmix") and " 2 " in line for line in lines)
    assert any(line.startswith("vdn") and " 2 " in line for line in lines)


def test_plot_names_the_allowed_metrics_for_a_bad_one(multirun, tmp_path):
    proc = subprocess.run([sys.executable, "scripts/plot.py", str(multirun), "--metric", "test/nope",
                           "--out", str(tmp_path / "x.png")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "test/return_mean" in proc.stderr


def test_evaluate_with_a_changed_env_option_and_a_refused_one(multirun):
    ckpt = next(multirun.rglob("last.ckpt"))  # trained on the additive game
    proc = subprocess.run([sys.executable, "scripts/evaluate.py", str(ckpt), "--episodes", "8", "--json",
                           "--env", "game=climbing"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["return"]["mean"] in {11, -30, 0, 7, 6, 5}  # a payoff of the climbing table
    proc = subprocess.run([sys.executable, "scripts/evaluate.py", str(ckpt), "--env", "grid=6"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "'grid=6'" in proc.stderr and "allowed keys: timeout_as_terminal, game" in proc.stderr


def test_benchmark_measures_every_stage_on_a_small_job():
    """scripts/benchmark.py times the env alone, collection, updates and a whole (read-only config,
    changed copy) training run, and prints each figure."""
    proc = subprocess.run([sys.executable, "scripts/benchmark.py", "env=matrix", "mixer=qmix", "data.warmup_episodes=8",
                           "--seconds", "0.5", "--budget", "200"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = {line.split(")")[0] + ")": float(line.split()[-1]) for line in proc.stdout.splitlines()
               if line[:3] in ("(a)", "(b)", "(c)", "(d)")}
    assert set(figures) == {"(a)", "(b)", "(c)", "(d)"} and all(v > 0 for v in figures.values())


def test_the_gpu_check_refuses_to_run_without_a_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible: scripts/gpu_check.sh would run")
    proc = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable})
    assert proc.returncode == 2 and "no CUDA device visible" in proc.stderr and "nothing was run" in proc.stderr


def test_qfix_collapse_finds_the_fall_whether_w_was_at_its_bound_and_the_greedy_value_above_the_return_before_it(
        tmp_path, monkeypatch):
    import importlib.util

    import pandas as pd

    spec = importlib.util.spec_from_file_location("qfix_collapse", ROOT / "scripts" / "qfix_collapse.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = [{"env_steps": s, "test/return_mean": r, "test/q_tot_start_mean": q} for s, r, q in
            [(0, -10, 0), (100, 9.4, 9), (200, 9.5, 10), (300, -10, 14), (400, -10, 15)]]
    rows += [{"env_steps": s, module.NEAR: v, module.W_MEAN: -v, module.Q_TOT: q, module.TARGET: t,
              module.NEAR_ABOVE: v, module.CREDIT_ABOVE: 1 - v}
             for s, v, q, t in [(150, 0.2, 10, 9), (250, 0.7, 12, 10), (350, 0.9, 20, 10)]]
    r = module.analyse(pd.DataFrame(rows), at_bound=0.5, reached=0.0, diag_from=0)
    assert r["premium"] == 1.5  # Q_tot - target up to the collapse: (1 + 2) / 2
    # above-target steps: the mean over the last LAST env steps before the fall (all of 150 and 250 here)
    assert r["near_above"] == pytest.approx(0.45) and r["credit_above"] == pytest.approx(0.55)
    assert r["at_bound_above"] is False
    monkeypatch.setattr(module, "LAST", 100)  # the window's edge: 250 only (300 - 100 = 200)
    late = module.analyse(pd.DataFrame(rows), at_bound=0.5, reached=0.0, diag_from=0)
    assert late["near_above"] == pytest.approx(0.7) and late["at_bound_above"] is True
    monkeypatch.undo()
    assert (r["best"], r["best_at"], r["collapse_at"], r["q_start"], r["return_at"]) == (9.5, 200, 300, 14, -10)
    assert r["near_bound_max"] == 0.7 and r["at_bound"]  # 0.9 comes after the collapse: not counted
    assert (r["over_before"], r["over_end"]) == (0.5, 25)  # Q_tot start - return at 200 (before the fall), at 400
    steady = module.analyse(pd.DataFrame(rows[:3] + rows[5:6]), at_bound=0.5, reached=0.0)
    assert steady["collapse_at"] is None and not steady["at_bound"]
    assert steady["over_before"] == steady["over_end"] == 0.5  # no fall: the last evaluation
    assert not r["recovered"] and not steady["recovered"]
    back = rows[:5] + [{"env_steps": 500, "test/return_mean": 99.6, "test/q_tot_start_mean": 96}]
    comeback = module.analyse(pd.DataFrame(back), at_bound=0.5, reached=0.0, diag_from=0)  # fell at 300, then the big box
    assert (comeback["best"], comeback["collapse_at"], comeback["recovered"]) == (9.5, 300, True)
    table = module.summary({"plain": [r, comeback]})
    module.figure({"plain": [r, comeback], "steady": [steady]}, tmp_path / "figures" / "greedy_value.png")
    assert (tmp_path / "figures" / "greedy_value.png").stat().st_size > 0
    assert table[-1] == "| plain | 2 | 0 | 2 | 1 | 1 | 2 | +25.0 to +25.0 / -3.6 to -3.6 | +1.5 to +1.5 | 0 of 1 |"
    wobble = [{"env_steps": s, "test/return_mean": r, "test/q_tot_start_mean": 0} for s, r in
              [(0, -10), (100, -20.9), (200, 99.6)]]  # bumping before any box delivered: not a fall
    assert module.analyse(pd.DataFrame(wobble), at_bound=0.5, reached=0.0)["collapse_at"] is None
