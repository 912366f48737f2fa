"""The study runner (skip finished runs, resume interrupted ones, claims) and its robust statistics,
checked on synthetic data whose answers are known."""
import ast
import dataclasses
import json
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rliable")

from lightning_marl.study import aggregate as agg  # noqa: E402
from lightning_marl.study.records import CLAIM, claim, is_finished  # noqa: E402
from lightning_marl.study.runner import command, run_all  # noqa: E402
from lightning_marl.study.spec import load_spec, plan  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_iqm_is_the_mean_of_the_middle_half():
    def iqm(scores):
        return agg.iqm_with_interval({"x": scores})["x"][0]

    assert iqm(np.arange(1, 9)[:, None]) == pytest.approx(4.5)  # middle half of 1..8: 3, 4, 5, 6
    assert iqm(np.array([[0.0], [1], [1], [1], [1], [1], [1], [1000]])) == pytest.approx(1.0)  # outliers cut


def test_iqm_interval_holds_the_truth_and_collapses_on_constant_scores():
    rng = np.random.default_rng(0)
    scores = {"a": rng.normal(5.0, 1.0, size=(60, 1)), "flat": np.full((10, 1), 3.0)}
    result = agg.iqm_with_interval(scores)
    value, low, high = result["a"]
    assert low < value < high and low < 5.0 < high and high - low < 1.0
    assert result["flat"] == pytest.approx((3.0, 3.0, 3.0))


def test_probability_of_improvement_on_known_cases():
    x, y = np.array([[3.0], [4.0], [5.0]]), np.array([[0.0], [1.0], [2.0]])
    assert agg.probability_of_improvement(x, y)[0] == pytest.approx(1.0)
    assert agg.probability_of_improvement(y, x)[0] == pytest.approx(0.0)
    assert agg.probability_of_improvement(x, x)[0] == pytest.approx(0.5)  # ties count half
    p, low, high = agg.probability_of_improvement(np.array([[1.0], [2.0]]), np.array([[1.5], [1.5]]))
    assert p == pytest.approx(0.5) and low <= 0.5 <= high


def test_performance_profile_is_the_fraction_above_tau():
    profiles, bands = agg.performance_profile({"m": np.array([[1.0], [2.0], [3.0], [4.0]])}, [0.5, 2.5, 4.5])
    assert profiles["m"].tolist() == pytest.approx([1.0, 0.5, 0.0])
    assert bands["m"].shape == (2, 3)


def test_bootstrap_intervals_do_not_depend_on_numpys_global_generator():
    """rliable draws its resamples from numpy's global generator: a report must give the same
    intervals whatever state a caller left it in, and leave that state as it found it."""
    rng = np.random.default_rng(3)
    scores = {name: rng.normal(0.0, 1.0, size=(5, 1)) for name in "abcd"}
    curves = {"c": rng.normal(0.0, 1.0, size=(5, 1, 4))}
    results = []
    for global_seed in (1, 2):
        np.random.seed(global_seed)
        results.append((agg.iqm_with_interval(scores), agg.probability_of_improvement(scores["a"], scores["b"]),
                        agg.iqm_curves(curves)["c"], agg.performance_profile(scores, [-0.5, 0.0, 0.5])[1]))
        after = np.random.get_state()
        np.random.seed(global_seed)
        assert np.random.get_state()[1].tolist() == after[1].tolist()  # the caller's stream is untouched
    (iqm1, poi1, curve1, band1), (iqm2, poi2, curve2, band2) = results
    assert iqm1 == iqm2 and poi1 == poi2
    assert all(np.array_equal(x, y) for x, y in zip(curve1, curve2))
    assert all(np.array_equal(band1[k], band2[k]) for k in band1)


def test_a_configurations_intervals_do_not_depend_on_the_other_configurations_of_its_report():
    """The same runs in two studies (a peer's runs adopted by a second study) get the same intervals."""
    rng = np.random.default_rng(4)
    shared = rng.normal(0.0, 1.0, size=(5, 1))
    others = {name: rng.normal(0.0, 1.0, size=(5, 1)) for name in "xyz"}
    alone, crowded = agg.iqm_with_interval({"s": shared}), agg.iqm_with_interval({**others, "s": shared})
    assert alone["s"] == crowded["s"] and alone["s"][1] < alone["s"][2]
    curve = rng.normal(0.0, 1.0, size=(5, 1, 3))
    curve_alone = agg.iqm_curves({"s": curve})["s"]
    curve_crowded = agg.iqm_curves({"x": rng.normal(size=(5, 1, 3)), "s": curve})["s"]
    assert all(np.array_equal(a, b) for a, b in zip(curve_alone, curve_crowded))
    band_alone = agg.performance_profile({"s": shared}, [0.0])[1]["s"]
    band_crowded = agg.performance_profile({**others, "s": shared}, [0.0])[1]["s"]
    assert np.array_equal(band_alone, band_crowded)


def test_area_under_curve_and_iqm_curves():
    assert agg.area_under_curve([0, 10], [0.0, 1.0]) == pytest.approx(0.5)
    assert agg.area_under_curve([0, 5, 10], [2.0, 2.0, 2.0]) == pytest.approx(2.0)
    curves = {"c": np.stack([np.linspace(0, 1, 5) + i for i in range(4)])[:, None, :]}  # runs 0..3 shifted
    mid, low, high = agg.iqm_curves(curves)["c"]
    assert mid.tolist() == pytest.approx((np.linspace(0, 1, 5) + 1.5).tolist())  # IQM of shifts 0..3 = 1.5
    assert (low <= mid).all() and (mid <= high).all()


def test_settled_at_and_fell_back_on_known_curves():
    steps = np.array([0, 10, 20, 30, 40, 50])
    assert agg.settled_at(steps, [0, 5, 9, 10, 10, 10], tolerance=0.5) == 30  # within 0.5 of 10 from step 30
    assert agg.settled_at(steps, [0, 10, 10, 3, 10, 10], tolerance=0.5) == 40  # a late dip counts
    assert agg.settled_at(steps, [0, 10, 10, 10, 10, 0], tolerance=0.5) == 50  # fell at the end: settles last
    assert agg.settled_at(steps, [10.2] * 6, tolerance=0.5) == 0
    assert agg.fell_back([0, 10, 10, 4], tolerance=0.5) and not agg.fell_back([0, 4, 10, 9.8], tolerance=0.5)


def test_runs_are_scored_up_to_their_common_horizon():
    """A peer whose loop tests last at 450,012 of a 500k budget and a run tested at 450,040 and 500,000:
    both are scored at ~450k (2% slack for the round an evaluation waits for), not one of them at 500k."""
    horizon = agg.common_horizon([450_012, 500_000, 500_100])
    assert horizon == pytest.approx(459_012.24)
    steps, values = agg.up_to(np.array([0, 450_040, 500_000]), np.array([0.0, 0.3, 0.4]), horizon)
    assert steps.tolist() == [0, 450_040] and values[-1] == 0.3
    assert agg.common_horizon([500_000, 500_064]) > 500_064  # runs of one budget: nothing left out
    steps, values = agg.up_to(np.array([6_000, 120_000]), np.array([0.1, 0.2]), 5_000)  # starts past it
    assert steps.tolist() == [6_000] and values.tolist() == [0.1]  # its first evaluation, never nothing


def write_spec(tmp_path, seeds=(0, 1)) -> Path:
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"""
name: tiny
runs_dir: {tmp_path / 'runs'}
archive_dir: {tmp_path / 'archive'}
presets: [reference/box_pushing_4x4]
mixers: [vdn, qmix]
seeds: {list(seeds)}
overrides: [total_env_steps=240, data.num_envs=8, data.batch_size=8, data.warmup_episodes=8, env.horizon=10,
            eval.interval_env_steps=80, eval.episodes=4, eval.num_envs=4, checkpoint.every_n_updates=2]
metrics: [test/small_boxes_mean]
pairs: [[qmix, vdn]]
""")
    return spec


def study(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "study.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def replay_and_weights(run) -> tuple[bool, dict]:
    """Whether the run's last.ckpt holds a replay, and its weights."""
    from lightning_marl.checkpoint_files import DATA_STATE, load_checkpoint

    state = load_checkpoint(run.folder / "checkpoints" / "last.ckpt")
    return "replay" in state[DATA_STATE], {k: v.clone() for k, v in state["state_dict"].items()}


def test_a_study_runs_skips_what_is_finished_and_reports(tmp_path):
    spec = write_spec(tmp_path)
    first = study("run", str(spec), "--jobs", "2", "--limit", "2", cwd=tmp_path)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    runs = plan(load_spec(spec))
    kept = {r: replay_and_weights(r) for r in runs[:2]}
    assert all(has_replay for has_replay, _ in kept.values())  # finished_checkpoint: full, the default
    # without_replay: the checkpoints of runs finished before (at the start) and now (as each finishes) lose it
    spec.write_text(spec.read_text() + "finished_checkpoint: without_replay\n")
    second = study("run", str(spec), "--jobs", "2", cwd=tmp_path)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert second.stdout.count("slimmed ") == 4, second.stdout
    for r in runs:
        has_replay, weights = replay_and_weights(r)
        assert not has_replay
        if r in kept:  # the rest stays as it was
            assert weights.keys() == kept[r][1].keys() and all(weights[k].equal(kept[r][1][k]) for k in weights)
    assert len(runs) == 4 and all((r.folder / "finished.json").is_file() for r in runs)
    assert all(not (r.folder / CLAIM).exists() for r in runs)
    assert all((r.archive / "metrics.csv").is_file() and (r.archive / ".hydra" / "config.yaml").is_file() for r in runs)
    for r in runs[:2]:  # run folders lost (another machine, a new session): the archive still counts
        import shutil

        shutil.rmtree(r.folder)
    again = study("run", str(spec), cwd=tmp_path)
    assert again.returncode == 0 and "start " not in again.stdout and "'finished_before': 4" in again.stdout
    import json

    resumed = runs[3].archive / "finished.json"  # as if it had been resumed: the page says whose peak is inflated
    assert json.loads(resumed.read_text())["sessions"] == 1
    resumed.write_text(json.dumps({**json.loads(resumed.read_text()), "sessions": 2, "peak_rss_mb": 4321.0}))
    report = study("report", str(spec), cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-2000:]
    text = (tmp_path / "runs" / "report.md").read_text()
    assert "## reference/box_pushing_4x4" in text and "| qmix | 2 |" in text and "| vdn | 2 |" in text
    assert "| qmix > vdn |" in text
    assert "1 of the finished runs are known to have been resumed from a checkpoint" in text
    assert f"{runs[3].preset} {runs[3].label} seed {runs[3].seed} (4,321 MiB)" in text
    # the page says how to reproduce it and what ran: command, grid, machine, code, effective settings
    assert f"python scripts/study.py run {spec}" in text and "seeds 0, 1" in text and "total_env_steps=240" in text
    assert "cores" in text and "torch " in text and "Code (commit of each session" in text
    assert "Effective settings of reference/box_pushing_4x4" in text and "td_lambda: 0.6" in text
    # Q1 compares mixer sizes: the table gives each configuration's mixer parameters (VDN has none)
    from lightning_marl.config import load
    from lightning_marl.experiment import build_datamodule, build_module

    cfg = load(["experiment=reference/box_pushing_4x4", "mixer=qmix", "env.horizon=10"])
    qmix = sum(p.numel() for p in build_module(cfg, build_datamodule(cfg).env_info()).mixer.parameters())
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| qmix |")
            or line.startswith("| vdn |")}
    assert f"| {qmix:,} |" in rows["qmix"] and "| 0 |" in rows["vdn"]
    # the spec's further metrics (e.g. SMACLite's return beside its win rate) get their IQM with an interval too
    header = [c.strip() for c in next(ln for ln in text.splitlines() if ln.startswith("| configuration |")).split("|")]
    extra = [c.strip() for c in rows["qmix"].split("|")][header.index("IQM final test/small_boxes_mean")]
    assert re.fullmatch(r"-?[\d.e+-]+ \[-?[\d.e+-]+, -?[\d.e+-]+\]", extra), extra
    assert (tmp_path / "runs" / "figures" / "curves_reference_box_pushing_4x4.png").stat().st_size > 5000
    assert (tmp_path / "runs" / "figures" / "profile_reference_box_pushing_4x4.png").is_file()


def test_slimming_leaves_what_is_not_a_finished_runs_final_state_and_survives_failures(tmp_path, monkeypatch):
    import time

    import torch

    from lightning_marl import checkpoint_files
    from lightning_marl.study.runner import slim

    run = plan(load_spec(write_spec(tmp_path, seeds=(0,))))[0]
    ckpt = run.folder / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)

    def write_checkpoint():
        torch.save({"state_dict": {}, "hyper_parameters": {}, "global_step": 1,
                    "MARLDataModule": {"env_steps": 7, "replay": {"obs": torch.ones(3)}}}, ckpt)

    said = []
    write_checkpoint()
    slim(run, "without_replay", said.append)  # no finished.json in the folder (finished only in an archive)
    slim(run, "full", said.append)
    (run.folder / "finished.json").write_text("{}")
    time.sleep(0.01)
    write_checkpoint()  # written after the run finished: a resume extending it
    slim(run, "without_replay", said.append)
    assert "replay" in checkpoint_files.load_checkpoint(ckpt)["MARLDataModule"] and said == []
    os.utime(ckpt, (0, 0))  # the finished state
    monkeypatch.setattr(checkpoint_files, "drop_replay", lambda path: (_ for _ in ()).throw(RuntimeError("disk full")))
    slim(run, "without_replay", said.append)
    assert said == [f"cannot slim {ckpt}: RuntimeError: disk full"]
    monkeypatch.undo()
    slim(run, "without_replay", said.append)
    assert "replay" not in checkpoint_files.load_checkpoint(ckpt)["MARLDataModule"] and said[-1].startswith("slimmed ")


def test_a_report_without_out_goes_to_the_expanded_runs_dir(tmp_path, monkeypatch, capsys):
    """``~`` in a spec's paths is the home folder, expanded when the spec is read: ``report`` without
    ``--out`` writes into the study's runs_dir there, and no folder named ``~`` appears in the working
    directory."""
    from lightning_marl.study import main

    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    spec = write_spec(work, seeds=(0,))
    spec.write_text(spec.read_text().replace(f"runs_dir: {work / 'runs'}", "runs_dir: ~/studies/tiny")
                    .replace(f"archive_dir: {work / 'archive'}", "archive_dir: ~/archive/tiny"))
    runs = plan(load_spec(spec))
    assert all(r.folder.is_relative_to(home / "studies" / "tiny") for r in runs)
    assert all(r.archive.is_relative_to(home / "archive" / "tiny") for r in runs)
    main(["report", str(spec)])
    assert capsys.readouterr().out == f"report: {home / 'studies' / 'tiny' / 'report.md'}\n"
    assert "# Study report: tiny" in (home / "studies" / "tiny" / "report.md").read_text()
    assert not [path for path in tmp_path.rglob("*") if path.name == "~"]


def test_the_study_modules_import_each_other_without_a_cycle():
    """The package in layers: records below the runner and the reuse of runs, which do not import each
    other (imports inside functions count)."""
    package = ROOT / "lightning_marl" / "study"
    names = {path.stem for path in package.glob("*.py")}

    def named(node) -> set:
        """The modules of the package that an import statement names (``from . import x`` included)."""
        if isinstance(node, ast.Import):
            full = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(filter(None, ["lightning_marl.study" if node.level else "", node.module]))
            full = [f"{base}.{alias.name}" for alias in node.names]
        else:
            return set()
        return {f.split(".")[2] for f in full if f.startswith("lightning_marl.study.")} & names

    imports = {path.stem: set().union(*map(named, ast.walk(ast.parse(path.read_text())))) - {path.stem}
               for path in package.glob("*.py")}
    assert "reuse" not in imports["runner"] and "runner" not in imports["reuse"]
    assert imports["records"] <= {"spec"}
    done: set = set()

    def visit(name: str, path: tuple) -> None:
        assert name not in path, f"import cycle: {' -> '.join(path + (name,))}"
        if name not in done:
            for other in imports[name]:
                visit(other, path + (name,))
            done.add(name)

    for name in imports:
        visit(name, ())


def test_an_interrupted_run_is_resumed_and_claims_are_respected(tmp_path):
    spec = load_spec(write_spec(tmp_path, seeds=(0,)))
    run = plan(spec)[0]
    assert "resume=" not in " ".join(command(run))
    (run.folder / "checkpoints").mkdir(parents=True)
    (run.folder / "checkpoints" / "last.ckpt").write_bytes(b"")
    (run.folder / ".hydra").mkdir()
    (run.folder / ".hydra" / "config.yaml").write_text("{}")
    assert command(run)[-1] == f"resume={run.folder}"
    from lightning_marl.study.runner import clear_unresumable

    clear_unresumable(run)
    assert (run.folder / ".hydra" / "config.yaml").is_file()  # it has a checkpoint: kept for the resume
    (run.folder / "checkpoints" / "last.ckpt").unlink()
    (run.folder / "metrics.csv").write_text("step,loss\n0,1\n")
    clear_unresumable(run)  # stopped before its first checkpoint: starts over, nothing appended to
    assert not (run.folder / "metrics.csv").exists() and not (run.folder / ".hydra").exists()
    other = plan(spec)[1]
    other.folder.mkdir(parents=True)
    (other.folder / CLAIM).write_text(f"{os.uname().nodename}:{os.getppid()}")  # a live process holds it
    assert not claim(other)
    (other.folder / CLAIM).write_text(f"{os.uname().nodename}:999999999")  # its process is gone
    assert claim(other) and (other.folder / CLAIM).read_text().endswith(f":{os.getpid()}")
    counts = run_all([other], say=lambda _: None)
    assert counts["skipped"] == 1  # a run this runner claimed already is not started a second time


def test_a_bad_spec_or_run_is_refused_before_anything_starts(tmp_path):
    spec = write_spec(tmp_path)
    spec.write_text(spec.read_text().replace("checkpoint.every_n_updates=2", "learner.gamma=2"))
    proc = study("run", str(spec), cwd=tmp_path)
    assert proc.returncode == 2 and "error: learner.gamma=2.0 is out of range" in proc.stderr
    assert not (tmp_path / "runs").exists()
    spec.write_text(spec.read_text().replace("pairs: [[qmix, vdn]]", "pairs: [[qmix, nobody]]"))
    proc = study("status", str(spec), cwd=tmp_path)
    assert proc.returncode == 2 and "pairs entry ['qmix', 'nobody']" in proc.stderr
    spec.write_text(spec.read_text().replace("pairs: [[qmix, nobody]]", "published: {nobody: '1.0'}"))
    proc = study("status", str(spec), cwd=tmp_path)
    assert proc.returncode == 2 and "published entries ['nobody']; allowed: configurations of the study" in proc.stderr
    spec.write_text(spec.read_text().replace("published: {nobody: '1.0'}", "finished_checkpoint: weights"))
    proc = study("status", str(spec), cwd=tmp_path)
    assert proc.returncode == 2 and "finished_checkpoint=weights; allowed: full or without_replay" in proc.stderr


def test_a_signal_to_the_runner_stops_its_runs_with_a_checkpoint(tmp_path):
    """The runner's runs must not outlive it (their claim is the runner's): SIGTERM reaches them,
    they write their checkpoint, and the runner exits with the signal's code."""
    import signal
    import time

    spec = write_spec(tmp_path, seeds=(0,))
    spec.write_text(spec.read_text().replace("total_env_steps=240", "total_env_steps=10000000")
                    .replace("mixers: [vdn, qmix]", "mixers: [vdn]").replace("pairs: [[qmix, vdn]]", "pairs: []"))
    run = plan(load_spec(spec))[0]
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "study.py"), "run", str(spec)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 180
    while not list((run.folder / "checkpoints").glob("step*.ckpt")):
        assert proc.poll() is None and time.time() < deadline, "the run never wrote a periodic checkpoint"
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "stopped" in out and "stopped by SIGTERM" in (run.folder / "study.log").read_text()
    assert (run.folder / "checkpoints" / "last.ckpt").is_file() and not (run.folder / ".claim").exists()


def finished_elsewhere(run) -> None:
    """A finished record of ``run`` as its runner leaves it (today's config; a two-point curve)."""
    from omegaconf import OmegaConf

    from lightning_marl.config import compose

    (run.folder / ".hydra").mkdir(parents=True)
    from lightning_marl.study.runner import RUNNER_OVERRIDES

    argv = [*RUNNER_OVERRIDES, *run.argv]  # as the runner trains it
    (run.folder / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(compose(argv)))
    (run.folder / "metrics.csv").write_text("step,env_steps,test/return_mean\n0,0,1.0\n5,240,2.0\n")
    (run.folder / "finished.json").write_text('{"host": "elsewhere", "wall_s": 60.0}')


def test_a_run_two_studies_share_is_adopted_not_trained(tmp_path, capsys):
    """QMIX's default z is the state: study B's ``qmix z=state`` is study A's ``qmix`` and is adopted
    (nothing trained); ``qmix z=zeros`` is no twin; a twin whose recorded config differs from today's
    is not adopted, one that differs in output settings only is."""
    from lightning_marl.study import main
    from lightning_marl.study.records import reused_from
    from lightning_marl.study.reuse import finished_twin, twins

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write_spec(tmp_path / "a", seeds=(0,))
    first.write_text(first.read_text().replace("archive_dir:", "# archive_dir:"))  # records in run folders
    second = write_spec(tmp_path / "b", seeds=(0,))
    second.write_text(second.read_text().replace("mixers: [vdn, qmix]", "mixers: [qmix]")
                      .replace("pairs: [[qmix, vdn]]", f"central_info: [state, zeros]\nreuse: [{first}]"))
    original = plan(load_spec(first))[1]
    assert original.label == "qmix"
    finished_elsewhere(original)
    shared, own = plan(load_spec(second))
    assert twins([own], plan(load_spec(first)))[own] == []  # z=zeros is another run
    (own.archive).mkdir(parents=True)
    (own.archive / "finished.json").write_text("{}")  # pretend it is done: nothing may be trained here
    with pytest.raises(SystemExit) as exit_code:
        main(["run", str(second)])
    out = capsys.readouterr().out
    assert exit_code.value.code == 0 and "start " not in out
    assert "reused reference/box_pushing_4x4 qmix z=state seed 0" in out and "'reused': 1" in out
    assert reused_from(shared) == str(original.folder) and reused_from(own) is None
    assert (shared.archive / "metrics.csv").read_bytes() == (original.folder / "metrics.csv").read_bytes()
    assert not shared.folder.exists()
    main(["status", str(second)])
    assert "reused    reference/box_pushing_4x4 qmix z=state" in capsys.readouterr().out
    main(["report", str(second), "--out", str(tmp_path / "report")])
    assert "1 of the finished runs are shared with other studies" in (tmp_path / "report" / "report.md").read_text()
    # a twin trained before its preset changed is no twin: its recorded config differs from today's
    saved = original.folder / ".hydra" / "config.yaml"
    saved.write_text(saved.read_text().replace("lr: 0.001", "lr: 0.002"))
    assert finished_twin(shared, twins([shared], [original])[shared]) is None
    saved.write_text(saved.read_text().replace("lr: 0.002", "lr: 0.001").replace("log_every_n_steps: 10",
                                                                                 "log_every_n_steps: 1"))
    assert finished_twin(shared, twins([shared], [original])[shared]) == original  # output settings do not count


def test_a_run_whose_twin_is_in_training_is_left_for_later_then_adopted(tmp_path):
    """The runner never waits on a claim it cannot check (here: another machine's); a run claimed
    by a live runner of its own study is never overwritten by an adoption."""
    from lightning_marl.study.reuse import twins

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    original = plan(load_spec(write_spec(tmp_path / "a", seeds=(0,))))[0]
    mine = plan(load_spec(write_spec(tmp_path / "b", seeds=(0,))))[0]
    original.folder.mkdir(parents=True)
    (original.folder / CLAIM).write_text("another-machine:12345")
    said = []
    counts = run_all([mine], twins=twins([mine], [original]), say=said.append)
    assert counts["waiting"] == 1 and counts["done"] == counts["reused"] == 0
    assert said == [f"later  {mine.preset} {mine.label} seed 0: its twin is being trained in {original.folder} "
                    "(another-machine:12345); run the study again to reuse it"]
    (original.folder / CLAIM).unlink()
    finished_elsewhere(original)
    mine.folder.mkdir(parents=True)
    (mine.folder / CLAIM).write_text(f"{os.uname().nodename}:{os.getppid()}")  # trained here right now
    counts = run_all([mine], twins=twins([mine], [original]), say=said.append)
    assert counts["reused"] == 0 and counts["skipped"] == 1 and not (mine.archive / "finished.json").exists()
    (mine.folder / CLAIM).unlink()
    counts = run_all([mine], twins=twins([mine], [original]), say=said.append)
    assert counts["reused"] == 1 and counts["done"] == 0 and not any(s.startswith("start") for s in said)
    assert (mine.archive / "finished.json").is_file()


def test_the_report_shows_a_presets_settings_in_todays_layout_and_which_runs_differ(tmp_path):
    """Records in an older layout read as today's; a run trained with another setting is named with
    the setting, the settings shown are the ones most runs share."""
    from lightning_marl.study.report import preset_settings

    runs = plan(load_spec(write_spec(tmp_path, seeds=(0, 1))))
    for run in runs:
        finished_elsewhere(run)
    old = runs[1].folder / ".hydra" / "config.yaml"  # the logger and the collection in an older layout: the same run
    old.write_text(re.sub(r"logger:\n(  .*\n)+", "logger:\n  kind: csv\n", old.read_text())
                   .replace("data:\n", "data:\n  async_collection: false\n", 1))
    odd = runs[2].folder / ".hydra" / "config.yaml"
    odd.write_text(odd.read_text().replace("lr: 0.001", "lr: 0.002"))
    text = "\n".join(preset_settings("reference/box_pushing_4x4", runs))
    assert "the same in 3 of its 4 runs without a variant" in text
    assert f"{runs[2].label} seed {runs[2].seed} differs in: learner.lr." in text
    assert "lr: 0.001" in text and "td_lambda: 0.6" in text
    assert "logger" not in text and "async_collection" not in text and "seed:" not in text and "mixer:" not in text


def test_status_read_by_a_pipe_that_closes_early_ends_quietly(tmp_path):
    """``study.py status spec | head``: the reader stops after one line; no traceback, exit 141."""
    spec = write_spec(tmp_path, seeds=range(1000))  # more lines than a pipe holds
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "study.py"), "status", str(spec)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("tiny: 0 of 2000 runs finished")
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141 and "Traceback" not in err and "Broken" not in err, err


def test_the_code_version_is_dirty_for_uncommitted_training_code_only(tmp_path):
    """A run records ``<commit>+dirty`` when the code it trains with is uncommitted; an edit to the
    study runner (which starts runs but takes no part in them) leaves its record clean."""
    from lightning_marl.study.runner import code_version

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                       capture_output=True)

    for name in ("lightning_marl/study/runner.py", "lightning_marl/models/agent.py", "README.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x = 1\n")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "first")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    (tmp_path / "lightning_marl/study/runner.py").write_text("x = 2\n")
    (tmp_path / "README.md").write_text("x = 2\n")
    assert code_version(tmp_path) == head
    (tmp_path / "lightning_marl/models/agent.py").write_text("x = 2\n")
    assert code_version(tmp_path) == head + "+dirty"


FAKE_EPYMARL = '''
import json, sys
from pathlib import Path
args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
if args.get("fail") == args["seed"]:
    sys.exit(1)
out = Path(args["local_results_path"]) / "sacred" / "gymma" / "1"
out.mkdir(parents=True)
t_max, seed = int(args["t_max"]), int(args["seed"])
steps = list(range(0, t_max, t_max // 4))  # as EPyMARL's loop: its last test one interval short of t_max
(out / "metrics.json").write_text(json.dumps({
    "test_return_mean": {"steps": steps, "values": [seed + i / 4 for i in range(len(steps))]},
    "return_mean": {"steps": steps[1:], "values": [0.5] * (len(steps) - 1)}}))
(out / "config.json").write_text(json.dumps({"seed": seed, "horizon": args["horizon"], "mixer": sys.argv[1]}))
'''


def test_a_peers_runs_are_run_read_and_reported_beside_this_trainers(tmp_path):
    """``peer:``: another framework's runs of the same grid, its command filled from this trainer's config
    of the run, its results read into the same records and the same report table."""
    (tmp_path / "fake_epymarl.py").write_text(FAKE_EPYMARL)
    spec = write_spec(tmp_path, seeds=(0, 1))
    spec.write_text(spec.read_text().replace("mixers: [vdn, qmix]", "mixers: [qmix]").replace(
        "pairs: [[qmix, vdn]]", f"""pairs: [[qmix, qmix fake]]
published: {{qmix fake: "0.9 (its paper)"}}
peer:
  name: fake
  mixers: [qmix]
  command: [{sys.executable}, {tmp_path / 'fake_epymarl.py'}, "--config={{mixer}}", "seed={{seed}}",
            "t_max={{total_env_steps}}", "horizon={{env.horizon}}", "local_results_path={{folder}}/results", "fail=1"]
  reader: epymarl
  env: {{OMP_NUM_THREADS: "1"}}"""))
    runs = plan(load_spec(spec))
    peer_runs = [r for r in runs if r.peer is not None]
    assert [r.label for r in peer_runs] == ["qmix fake", "qmix fake"] and len(runs) == 4
    assert command(peer_runs[0])[2:7] == ["--config=qmix", "seed=0", "t_max=240", "horizon=10",
                                          f"local_results_path={peer_runs[0].folder}/results"]
    done = study("run", str(spec), "--jobs", "2", cwd=tmp_path)
    assert done.returncode != 0 and "FAILED reference/box_pushing_4x4 qmix fake seed 1" in done.stdout
    first = peer_runs[0].archive
    assert (first / "finished.json").is_file() and (first / "peer_config.json").is_file()
    import pandas as pd

    metrics = pd.read_csv(first / "metrics.csv")
    assert metrics["env_steps"].tolist() == [0, 60, 120, 180] and metrics["test/return_mean"].iloc[-1] == 0.75
    assert not (peer_runs[1].folder / "finished.json").exists()
    report = study("report", str(spec), cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-2000:]
    text = (tmp_path / "runs" / "report.md").read_text()
    assert "| qmix fake | 1 | 0.75 [0.75, 0.75] |" in text and "| qmix | 2 |" in text and "| qmix > qmix fake |" in text
    # this trainer's runs evaluate at 0, 80, 160, 240: scored at 160, not after the peer's last test at 180
    assert "Scored up to 184 env steps, the common horizon: the later evaluations of qmix (2 of 2) are left out" in text
    assert "Runs labelled `fake` are fake's own" in text and "peak memory MiB" in text
    assert "Published values (context: their own budgets and settings, not measured here): qmix fake: 0.9 (its paper)." in text


def test_a_peers_run_that_another_study_finished_is_adopted_with_its_peer_config(tmp_path):
    """Study B runs this trainer with another setting beside the same peer runs as study A: B's peer run is
    A's (the same peer, command and settings it names) and is adopted with the peer's config, not trained;
    B's own run is nobody's twin; a peer run whose command differs (another budget) is no twin."""
    from lightning_marl.study.records import reused_from
    from lightning_marl.study.reuse import twins

    peer = """peer:
  name: fake
  mixers: [qmix]
  command: [fake, "--config={mixer}", "seed={seed}", "t_max={total_env_steps}", "out={folder}"]
  reader: epymarl"""
    specs = []
    for name, extra in (("a", ""), ("b", ", learner.lr=0.002")):
        (tmp_path / name).mkdir()
        spec = write_spec(tmp_path / name, seeds=(0,))
        spec.write_text(spec.read_text().replace("mixers: [vdn, qmix]", "mixers: [qmix]")
                        .replace("pairs: [[qmix, vdn]]", peer).replace("checkpoint.every_n_updates=2",
                                                                      "checkpoint.every_n_updates=2" + extra))
        specs.append(plan(load_spec(spec)))
    (mine, theirs), (own, peer_run) = specs
    assert theirs.peer is not None and peer_run.peer is not None and "learner.lr=0.002" in peer_run.argv
    theirs.folder.mkdir(parents=True)
    (theirs.folder / "metrics.csv").write_text("env_steps,test/return_mean\n0,0.0\n240,1.0\n")
    (theirs.folder / "peer_config.json").write_text('{"seed": 0}')
    (theirs.folder / "finished.json").write_text(json.dumps({"wall_s": 5.0, "argv": list(theirs.argv)}))
    found = twins([own, peer_run], [mine, theirs])
    assert found[own] == [] and found[peer_run] == [theirs]
    counts = run_all([peer_run], twins=found, say=lambda _: None)
    assert counts["reused"] == 1 and counts["done"] == 0 and reused_from(peer_run) == str(theirs.folder)
    assert (peer_run.archive / "peer_config.json").read_text() == '{"seed": 0}'
    assert (peer_run.archive / "metrics.csv").read_bytes() == (theirs.folder / "metrics.csv").read_bytes()
    longer = dataclasses.replace(peer_run, argv=(*peer_run.argv, "total_env_steps=480"))
    assert twins([longer], [theirs])[longer] == []


def test_a_run_that_cannot_start_fails_alone_and_the_others_go_on(tmp_path, monkeypatch):
    """E.g. the code changed under a running study and one run's config no longer composes."""
    from lightning_marl.study import runner

    runs = plan(load_spec(write_spec(tmp_path, seeds=(0,))))
    real_start, said = runner.start, []

    def start(run):
        if run.mixer == "vdn":
            raise KeyError("Key 'valid_actions' not in 'LBFConfig'")
        return real_start(run)

    monkeypatch.setattr(runner, "start", start)
    counts = run_all(runs, say=said.append)
    assert counts["failed"] == 1 and counts["done"] == 1, said
    assert any("FAILED reference/box_pushing_4x4 vdn seed 0 (could not start: \"Key 'valid_actions' not in" in line
               for line in said), said
    assert not (runs[0].folder / CLAIM).exists()  # the failed run is free for the next call


def test_first_configurations_run_first_and_alone_with_first_only(tmp_path, capsys):
    from lightning_marl.study import main
    from lightning_marl.study.spec import load_spec, plan

    spec = write_spec(tmp_path, seeds=(0, 1, 2))
    before = [(run.label, run.seed) for run in plan(load_spec(spec))]
    assert before[:2] == [("vdn", 0), ("qmix", 0)]  # whole seeds first
    spec.write_text(spec.read_text() + "first: [qmix]\n")
    after = [(run.label, run.seed) for run in plan(load_spec(spec))]
    assert after == [("qmix", 0), ("qmix", 1), ("qmix", 2), ("vdn", 0), ("vdn", 1), ("vdn", 2)]
    main(["status", str(spec), "--first-only"])
    out = capsys.readouterr().out
    assert "0 of 3 runs" in out and "vdn" not in out
    spec.write_text(spec.read_text().replace("first: [qmix]", "first: [qmix, nobody]"))
    with pytest.raises(SystemExit) as stop:
        main(["status", str(spec)])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "first entries ['nobody']" in err and "Traceback" not in err


def test_a_runs_wall_time_is_kept_while_it_trains_and_adds_up_over_sessions(tmp_path):
    """A session killed together with its runner (a session's end) still counts: the runner writes the run's
    wall time to its folder while it trains, and the next session adds to it."""
    import subprocess as sp
    import time

    from lightning_marl.study.records import WALL
    from lightning_marl.study.runner import track

    run = plan(load_spec(write_spec(tmp_path, seeds=(0,))))[0]
    run.folder.mkdir(parents=True)
    proc = sp.Popen([sys.executable, "-c", "import time; time.sleep(2)"])
    proc.started, proc.wall_before, proc.peak_rss = time.time() - 30.0, 100.0, 0.0
    try:
        wall = track(run, proc)
        assert 130.0 <= wall < 135.0 and float((run.folder / WALL).read_text()) == round(wall, 1)
        assert proc.peak_rss > 0  # the process's memory, sampled
    finally:
        proc.wait()


def test_a_resumed_runs_peak_memory_and_sessions_add_up_over_its_sessions(tmp_path, monkeypatch):
    """A run resumed near its end keeps the peak an earlier session reached (the runner writes it to the run's
    folder as it samples), and its record says how many sessions it trained in; a run that starts over
    forgets both."""
    import json

    from lightning_marl.study import runner
    from lightning_marl.study.records import PEAK, SESSIONS, sessions

    run = plan(load_spec(write_spec(tmp_path, seeds=(0,))))[0]
    (run.folder / "checkpoints").mkdir(parents=True)
    (run.folder / "checkpoints" / "last.ckpt").write_bytes(b"")  # resumable: a checkpoint and its config
    (run.folder / ".hydra").mkdir()
    (run.folder / ".hydra" / "config.yaml").write_text("{}")
    (run.folder / SESSIONS).write_text("abc123\n")  # the session that trained it first...
    (run.folder / PEAK).write_text("999999.0")  # ...and peaked above anything this small process reaches
    monkeypatch.setattr(runner, "command", lambda r: [sys.executable, "-c", "import time; time.sleep(1)"])
    proc = runner.start(run)
    runner.track(run, proc)
    assert proc.peak_rss == 999999.0 and float((run.folder / PEAK).read_text()) == 999999.0
    proc.wait()
    (run.folder / "metrics.csv").write_text("step,loss\n0,1\n")  # what a finished run leaves (archived)
    assert runner.finish(run, proc, "full")
    record = json.loads((run.folder / "finished.json").read_text())
    assert record["peak_rss_mb"] == 999999.0 and record["sessions"] == 2 and sessions(run) == 2
    (run.folder / "finished.json").unlink()
    (run.folder / "checkpoints" / "last.ckpt").unlink()  # no checkpoint: it starts over, from no peak
    proc = runner.start(run)
    runner.track(run, proc)
    assert 0 < proc.peak_rss < 999999.0 and float((run.folder / PEAK).read_text()) == round(proc.peak_rss, 1)
    proc.wait()
    (run.folder / "metrics.csv").write_text("step,loss\n0,1\n")
    (run.folder / ".hydra").mkdir()
    (run.folder / ".hydra" / "config.yaml").write_text("{}")
    assert runner.finish(run, proc, "full") and sessions(run) == 1


def test_status_estimates_the_training_left_from_the_finished_runs(tmp_path, capsys):
    """Each unfinished run: its configuration's median finished wall time (else its preset's), less what it
    has trained; nothing finished: no estimate."""
    from lightning_marl.study import main
    from lightning_marl.study.records import WALL
    from lightning_marl.study.spec import load_spec, plan

    spec = write_spec(tmp_path, seeds=(0, 1, 2))
    main(["status", str(spec)])
    assert "remaining: no finished run of these presets to estimate it by" in capsys.readouterr().out
    runs = {(run.label, run.seed): run for run in plan(load_spec(spec))}

    def finished(label, seed, wall):
        runs[(label, seed)].folder.mkdir(parents=True)
        (runs[(label, seed)].folder / "finished.json").write_text(json.dumps({"wall_s": wall}))

    finished("vdn", 0, 1000.0)
    finished("vdn", 1, 3000.0)
    for name in ("checkpoints/last.ckpt", ".hydra/config.yaml"):  # started, and resumes from its checkpoint:
        (runs[("qmix", 1)].folder / name).parent.mkdir(parents=True, exist_ok=True)
        (runs[("qmix", 1)].folder / name).touch()
    (runs[("qmix", 1)].folder / WALL).write_text("1500.0")  # trained 1500 s of its estimated 2000
    main(["status", str(spec)])  # vdn 2: 2000; qmix (none finished: the preset's median) 2000 + 500 + 2000
    assert "remaining: ~1.8 h of training for 4 of the 4 unfinished runs" in capsys.readouterr().out
    finished("qmix", 0, 7200.0)  # now qmix's own median: 7200 - 1500 + 7200, and vdn 2: 2000
    main(["status", str(spec)])
    assert "remaining: ~4.1 h of training for 3 of the 3 unfinished runs" in capsys.readouterr().out


def test_with_a_deadline_only_the_runs_expected_to_end_by_then_start(tmp_path, capsys):
    """--until: a run starts only if its estimate (status's) ends before the deadline; the others, and runs
    with no estimate, are left untouched for a later call, and the runner ends without error."""
    import time

    from lightning_marl.study import main
    from lightning_marl.study.records import WALL

    spec = write_spec(tmp_path, seeds=(0, 1))
    with pytest.raises(SystemExit) as stop:  # nothing finished: no estimate, nothing starts
        main(["run", str(spec), "--until", (datetime.now() + timedelta(hours=2)).isoformat(timespec="minutes")])
    out = capsys.readouterr().out
    assert stop.value.code == 0 and "'after_deadline': 4" in out and "'done': 0" in out, out
    assert out.count("no finished run of its preset to estimate its time by") == 4, out
    runs = {(run.label, run.seed): run for run in plan(load_spec(spec))}
    assert not any(run.folder.exists() for run in runs.values())

    for label, wall in (("vdn", 5.0), ("qmix", 36_000.0)):  # seed 0 of each finished: vdn fast, qmix 10 h
        runs[(label, 0)].folder.mkdir(parents=True)
        (runs[(label, 0)].folder / "finished.json").write_text(json.dumps({"wall_s": wall}))
    runs[("qmix", 1)].folder.mkdir(parents=True)  # trained 35,990 s but left no checkpoint: it starts over,
    (runs[("qmix", 1)].folder / WALL).write_text("35990.0")  # so its time left is the whole 10 h, not 10 s
    said = []
    counts = run_all(list(runs.values()), deadline=time.time() + 3600, say=said.append)
    assert counts["done"] == 1 and counts["after_deadline"] == 1 and counts["failed"] == 0, said
    assert is_finished(runs[("vdn", 1)]) and sorted(p.name for p in runs[("qmix", 1)].folder.iterdir()) == [WALL]
    assert any(line.startswith("later  reference/box_pushing_4x4 qmix seed 1: its ~600 min of training left "
                               "would end after the deadline") for line in said), said


def test_a_deadline_that_is_not_a_time_to_come_is_refused(tmp_path, capsys):
    from lightning_marl.study import deadline, main

    now = datetime(2026, 12, 6, 23, 0)
    assert datetime.fromtimestamp(deadline("23:30", now)) == datetime(2026, 12, 6, 23, 30)
    assert datetime.fromtimestamp(deadline("01:05", now)) == datetime(2026, 12, 7, 1, 5)  # its next occurrence
    assert datetime.fromtimestamp(deadline("2026-12-07T01:05", now)) == datetime(2026, 12, 7, 1, 5)
    spec = write_spec(tmp_path)
    assert datetime.fromtimestamp(deadline("2026-12-07T01:05+00:00", now)) == \
        datetime.fromtimestamp(datetime(2026, 12, 7, 1, 5, tzinfo=timezone.utc).timestamp())  # its offset kept
    for bad in ("25:00", "7:5", "+1:30", "soon", "2020-01-01T00:00"):
        with pytest.raises(SystemExit) as stop:
            main(["run", str(spec), "--until", bad])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and f"--until={bad} is not a time to come; allowed: HH:MM" in err, err
        assert "Traceback" not in err and not (tmp_path / "runs").exists()
    with pytest.raises(SystemExit) as stop:
        main(["status", str(spec), "--until", "23:30"])
    assert stop.value.code == 2 and "--until is for run, not status" in capsys.readouterr().err


def test_every_committed_study_spec_loads_and_its_runs_pass_the_config_checks():
    """A spec in studies/ that a config change broke would fail only when its chain reaches it, hours
    later: each configuration's config (one seed; this trainer's runs) is composed and checked here,
    less the checks that need the env's package (SMACLite is not installable in CI)."""
    from lightning_marl.config import compose, validate
    from lightning_marl.errors import ConfigError
    from lightning_marl.study.spec import load_spec, plan

    specs = sorted((ROOT / "studies").glob("*.yaml"))
    assert specs
    for path in specs:
        seen = set()
        for run in plan(load_spec(path)):
            if run.peer is None and (run.preset, run.label) not in seen:
                seen.add((run.preset, run.label))
                try:
                    validate(compose([a for a in run.argv if not a.startswith("hydra.")]), env_checks=False)
                except ConfigError as err:
                    raise AssertionError(f"{path.name}, {run.label}: {err}") from None


def test_verify_retrains_a_runs_start_and_finds_it_identical_or_names_what_changed(tmp_path):
    """``verify`` re-trains each finished run's first env steps and compares its metrics with the record:
    an untouched record is identical; a value changed in it is named (column, env step, both values);
    ``--dirty`` picks the runs that uncommitted code trained, ``--trained-by`` those of a commit; a run
    whose preset changed since is not replayed."""
    spec = write_spec(tmp_path, seeds=(0,))
    spec.write_text(spec.read_text().replace("checkpoint.every_n_updates=2]",
                                             "checkpoint.every_n_updates=2, trainer.log_every_n_steps=1]"))
    assert study("run", str(spec), cwd=tmp_path).returncode == 0
    qmix, vdn = (next(r for r in plan(load_spec(spec)) if r.mixer == m) for m in ("qmix", "vdn"))
    metrics = qmix.archive / "metrics.csv"  # one loss of QMIX's record changed
    lines = metrics.read_text().splitlines()
    header = lines[0].split(",")
    row = next(i for i, line in enumerate(lines[1:], 1) if line.split(",")[header.index("loss")])
    cells = lines[row].split(",")
    steps, cells[header.index("loss")] = cells[header.index("env_steps")], "123.0"
    metrics.write_text("\n".join(lines[:row] + [",".join(cells)] + lines[row + 1:]) + "\n")

    both = study("verify", str(spec), "--env-steps", "160", cwd=tmp_path)
    assert both.returncode == 1, both.stdout[-2000:] + both.stderr[-2000:]
    compared = re.findall(r"identical reference/box_pushing_4x4 vdn seed 0: (\d+) rows up to env step (\d+) ", both.stdout)
    assert len(compared) == 1 and int(compared[0][0]) >= 5 and 160 <= int(compared[0][1]) < 240, both.stdout
    assert f"different reference/box_pushing_4x4 qmix seed 0: row {row} (env step {float(steps):.0f}) differs in 1 " \
        in both.stdout and "loss 123.0 recorded" in both.stdout

    for run, code in ((vdn, "0123456789ab+dirty"), (qmix, "fedcba987654")):  # VDN trained by uncommitted code,
        done = json.loads((run.archive / "finished.json").read_text())  # QMIX by a commit (whatever the tree is now)
        (run.archive / "finished.json").write_text(json.dumps({**done, "code": [code]}))
    dirty = study("verify", str(spec), "--env-steps", "160", "--dirty", cwd=tmp_path)
    assert dirty.returncode == 0 and "identical reference/box_pushing_4x4 vdn seed 0" in dirty.stdout
    assert "qmix seed" not in dirty.stdout and "(trained by 0123456789ab+dirty)" in dirty.stdout

    config = vdn.archive / ".hydra" / "config.yaml"  # as if VDN's preset had changed its gamma since
    config.write_text(config.read_text().replace("gamma: 0.99", "gamma: 0.5"))
    changed = study("verify", str(spec), "--env-steps", "160", "--trained-by", "01234", cwd=tmp_path)
    assert changed.returncode == 0 and "skipped   reference/box_pushing_4x4 vdn seed 0: its command no longer" \
        in changed.stdout and "qmix seed" not in changed.stdout


def test_verify_compares_what_both_runs_computed_and_pins_the_budgets_one_setting(tmp_path):
    """The comparison leaves out measured rates, columns one side lacks, rows of bookkeeping only and the
    replay's final evaluation; prioritized replay's beta keeps annealing over the run's own budget."""
    from lightning_marl.study.spec import Run
    from lightning_marl.study.verify import compare, replay_argv

    record, replay = tmp_path / "record.csv", tmp_path / "replay.csv"
    record.write_text("env_steps,step,loss,env_steps_per_s,test/return_mean\n0,0,,,1.0\n40,1,0.5,900,\n"
                      "80,2,0.25,910,\n120,3,0.125,905,\n")
    replay.write_text("env_steps,step,loss,env_steps_per_s,test/return_mean,diag/td_error_max\n0,0,,,1.0,\n"
                      "40,1,0.5,400,,\n40,1,,,,7.0\n80,2,0.25,410,,\n80,2,,,3.0,\n")
    assert compare(record, replay) == (True, "3 rows up to env step 80 identical in 4 columns")
    replay.write_text(replay.read_text().replace("80,2,0.25", "80,2,0.3"))
    assert compare(record, replay) == (False, "row 3 (env step 80) differs in 1 of 4 columns: loss 0.25 recorded, "
                                              "0.3 now")
    replay.write_text("env_steps,step,loss\n0,0,\n")
    assert compare(record, replay) == (False, "the replay logged no metrics")

    def run(*argv):
        return Run("reference/box_pushing_4x4", "vdn", None, "", 0, tmp_path, ("experiment=reference/box_pushing_4x4",
                                                                              "mixer=vdn", "seed=0", *argv))
    pinned = replay_argv(run("data.prioritized=true", "total_env_steps=300000"), 1000, tmp_path)
    assert "total_env_steps=1000" in pinned and "data.priority_beta_anneal_steps=300000" in pinned
    assert not any("priority_beta" in a for a in replay_argv(run(), 1000, tmp_path))  # uniform replay: no beta
    fixed = replay_argv(run("data.prioritized=true", "data.priority_beta_anneal_steps=5000"), 1000, tmp_path)
    assert [a for a in fixed if "priority_beta" in a] == ["data.priority_beta_anneal_steps=5000"]


def test_verify_refuses_a_bad_budget(tmp_path):
    refused = study("verify", str(write_spec(tmp_path, seeds=(0,))), "--env-steps", "0", cwd=tmp_path)
    assert refused.returncode == 2 and "--env-steps=0 is out of range; allowed: an integer >= 1" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_verify_stopped_by_a_signal_kills_its_replay_and_leaves_nothing(tmp_path):
    spec = write_spec(tmp_path, seeds=(0,))
    spec.write_text(spec.read_text().replace("mixers: [vdn, qmix]", "mixers: [vdn]").replace("pairs: [[qmix, vdn]]", ""))
    assert study("run", str(spec), cwd=tmp_path).returncode == 0
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "study.py"), "verify", str(spec), "--env-steps",
                             "1000000"], cwd=tmp_path, env={**os.environ, "TMPDIR": str(scratch)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    import time

    deadline = time.time() + 120
    while not list(scratch.glob("verify-*/run/metrics.csv")) and time.time() < deadline:
        time.sleep(0.5)  # the replay is training
    assert list(scratch.glob("verify-*/run/metrics.csv")), "the replay did not start"
    proc.send_signal(15)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "verify stopped" in err and "Traceback" not in err, err[-2000:]
    assert not list(scratch.iterdir())
    leftover = subprocess.run(["pgrep", "-f", f"hydra.run.dir={scratch}"], capture_output=True, text=True)
    assert leftover.stdout.strip() == ""
