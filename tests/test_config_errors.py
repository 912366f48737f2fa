"""Every wrong value is refused before training: one line naming key=value and what is allowed,
exit code 2, no traceback, nothing on disk (lightning_marl/config, lightning_marl/cli)."""
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lightning_marl.cli import preflight, unique_dir
from lightning_marl.cli.resume import plan_resume
from lightning_marl.config import validate
from lightning_marl.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]

# (command-line overrides, the message they must get); the cases first, then one per kind of field
REFUSED = [
    # strings a YAML reader would take as booleans
    (["data.prioritized=no"], "data.prioritized=no is not a boolean; allowed: true or false"),
    (["checkpoint.replay=no"], "checkpoint.replay=no is not a boolean; allowed: true or false"),
    (["env.random_init=no"], "env.random_init=no is not a boolean; allowed: true or false"),
    (["learner.double_q=no"], "learner.double_q=no is not a boolean; allowed: true or false"),
    (["agent.agent_id=no"], "agent.agent_id=no is not a boolean; allowed: true or false"),
    (["learner.double_q=0"], "learner.double_q=0 is not a boolean; allowed: true or false"),
    # booleans where integers belong
    (["data.batch_size=true"], "data.batch_size=true has the wrong type; allowed: an integer >= 1"),
    (["total_env_steps=true"], "total_env_steps=true has the wrong type; allowed: an integer >= 1"),
    # a run that could never update
    (["data.warmup_episodes=100", "data.buffer_size=50"],
     "data.warmup_episodes=100 exceeds the replay; allowed: at most data.buffer_size=50"),
    (["data.buffer_size=8"], "data.batch_size=32 exceeds the replay; allowed: at most data.buffer_size=8"),
    # transitions need what a single step can give (the default agent is recurrent)
    (["data.sample=transitions"], "data.sample=transitions does not work with agent.recurrent=true; allowed: "
                                  "episodes, or transitions with agent.recurrent=false"),
    (["data.sample=transitions", "agent.recurrent=false", "agent.last_action=false", "learner.td_lambda=0.6"],
     "data.sample=transitions does not work with learner.td_lambda=0.6; allowed: episodes, or transitions with "
     "learner.td_lambda=0.0"),
    (["data.sample=steps"], "data.sample=steps"),
    # sizes and rates
    (["mixer=qmix", "mixer.embed_dim=0"], "mixer.embed_dim=0 is out of range; allowed: an integer >= 1"),
    (["learner.lr=inf"], "learner.lr=inf is out of range; allowed: a finite number > 0"),
    (["learner.lr=nan"], "learner.lr=nan is out of range; allowed: a finite number > 0"),
    (["mixer=qmix", "mixer.hypernet_layers=5"], "mixer.hypernet_layers=5 is out of range; allowed: 1 or 2"),
    (["mixer=qmix", "mixer.embed_dim=-3"], "mixer.embed_dim=-3 is out of range; allowed: an integer >= 1"),
    (["checkpoint.every_n_updates=-1"], "checkpoint.every_n_updates=-1 is out of range; allowed: an integer >= 0"),
    (["checkpoint.every_n_updates=abc"], "checkpoint.every_n_updates=abc has the wrong type; allowed: an integer >= 0"),
    (["threads=-2"], "threads=-2 is out of range; allowed: null or an integer >= 1"),
    (["threads=abc"], "threads=abc has the wrong type; allowed: null or an integer >= 1"),
    (["env=matrix", "env.payoff=[[1,2],[3]]"], "env.payoff=[[1, 2], [3]] is not a table of numbers; allowed: a hypercube"),
    (["env=matrix", "env.payoff=[[1,2],[3,4]]", "env.n_agents=3"],
     "env.payoff has 2 dimensions for env.n_agents=3; allowed: one dimension per agent"),
    # hardware that is not there (this machine and CI have no GPU)
    pytest.param(["device=cuda"], "device=cuda is not available; allowed: cpu", marks=pytest.mark.skipif(
        __import__("torch").cuda.is_available(), reason="a GPU is present")),
    pytest.param(["trainer=gpu"], "trainer.accelerator=gpu is not available; allowed: cpu", marks=pytest.mark.skipif(
        __import__("torch").cuda.is_available(), reason="a GPU is present")),
    (["device=tpu"], "device=tpu is out of range; allowed: cpu, cuda or cuda:N"),
    # keys the chosen schema does not have
    (["mixer=vdn", "+mixer.embed_dim=32"], "mixer.embed_dim=32 is not an option of mixer (vdn); allowed: no options"),
    (["mixer.w_layers=0"], "mixer.w_layers=0 is out of range; allowed: an integer >= 1"),
    (["+data.batchsize=8"], "data.batchsize=8 is not an option of data; allowed: num_envs, buffer_size, batch_size"),
    (["+env.foo=1"], "env.foo=1 is not an option of env (box_pushing); allowed: timeout_as_terminal, grid"),
    (["foo=1"], "foo=1 is not an option; allowed: env, mixer"),
    (["mixer=qmix", "mixer.w_hidden=32"], "mixer.w_hidden=32 is not an option of mixer (qmix); allowed: central_info"),
    (["mixer.name=qmix"], "mixer.name=qmix cannot change the schema; allowed: the config group choice instead: mixer=qmix"),
    (["env=vmas", "env.scenario={n_agents: 3}"], "env.scenario={n_agents: 3} sets keys the mapping does not have; "
                                                 "allowed: +env.scenario={n_agents: 3}"),
    (["env=vmas", "env.scenario.n_agents=3"], "env.scenario.n_agents=3 sets keys the mapping does not have; allowed: "
                                             "+env.scenario.n_agents=3"),
    (["env=vmas", "env.scenario.a.b=4"], "env.scenario.a.b=4 sets keys the mapping does not have; allowed: "
                                        "+env.scenario.a.b=4"),
    # group choices
    (["mixer=qmax"], "mixer=qmax is not an option; allowed: duelmix, qfix_lin, qfix_mono, qfix_sum, qmix, qplex"),
    (["env=atari"], "env=atari is not an option; allowed: box_pushing, lbf, matrix, mpe, overcooked, rware, smaclite, smacv2, "
                   "vmas"),
    (["trainer=tpu"], "trainer=tpu is not an option; allowed: cpu, gpu, ddp"),
    (["experiment=nope"], "experiment=nope is not an option; allowed: benchmarl/vmas, box_pushing_10x10"),
    # one case per kind of field: enum, optional int, float range, string choices, mapping, optional enum
    (["learner.td_weighting=pessimistic"], "learner.td_weighting=pessimistic has the wrong type; allowed: none or optimistic"),
    (["mixer.central_info=oracle"], "mixer.central_info=oracle has the wrong type; allowed: state, history, history_state"),
    (["data.priority_beta_anneal_steps=0"], "data.priority_beta_anneal_steps=0 is out of range; allowed: null or an integer >= 1"),
    (["learner.gamma=1.5"], "learner.gamma=1.5 is out of range; allowed: a finite number in [0, 1]"),
    (["learner.optimistic_alpha=0"], "learner.optimistic_alpha=0.0 is out of range; allowed: a finite number in (0, 1]"),
    (["trainer.accelerator=tpu"], "trainer.accelerator=tpu is out of range; allowed: cpu, gpu, cuda or auto"),
    (["+eval.env.layout=cramped_room"], "eval.env.layout=cramped_room is not an option of env box_pushing; allowed: "),
    (["+eval.env.grid=5"], "eval.env.grid=5 is out of range; allowed: an even integer in [4, 30]"),
    (["data.start_method=threads"], "data.start_method=threads has the wrong type; allowed: null or spawn, fork or forkserver"),
    (["env.grid=5"], "env.grid=5 is out of range; allowed: an even integer in [4, 30]"),
    (["seed=-1"], "seed=-1 is out of range; allowed: an integer >= 0"),
    (["learner.compile=turbo"], "learner.compile=turbo is out of range; allowed: null or a torch.compile backend"),
    # cross-field rules: options that belong to another mixer, env or setting
    (["data.env_workers=processes"], "data.env_workers=processes does not apply; allowed: auto for env box_pushing"),
    (["mixer=qmix", "learner.intervention_anneal_steps=10"],
     "learner.intervention_anneal_steps=10 does not apply; allowed: 0 for mixer qmix"),
    (["learner.shaping_anneal_steps=10"], "learner.shaping_anneal_steps=10 does not apply; allowed: 0 for env box_pushing"),
    (["agent.torso=cnn"], "agent.torso=cnn is out of range; allowed: mlp for this env (cnn needs grid observations"),
    (["data.collector_processes=3"], "data.num_envs=8 is not a multiple of the workers; allowed: a multiple of "
                                     "data.collector_processes=3"),
    (["data.async_collection=true"], "data.async_collection=true is not an option of data; allowed: num_envs, "),
    # a sweep: every job is checked before any starts
    (["-m", "seed=0,1", "learner.gamma=0.9,2"], "learner.gamma=2.0 is out of range; allowed: a finite number in [0, 1]"),
    # the syntax itself
    (["data.batch_size=[1"], "data.batch_size=[1 cannot be parsed (no viable alternative at input '[1'); allowed: "),
]


@pytest.mark.parametrize("argv, message", REFUSED)
def test_every_bad_value_is_refused_with_what_is_allowed(argv, message):
    with pytest.raises(ConfigError) as err:
        preflight(argv)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("argv", [[], ["env=matrix", "mixer=qmix"], ["experiment=box_pushing_4x4_big_box"],
                                  ["env=overcooked", "env.obs=lossless", "agent.torso=cnn"],
                                  ["-m", "seed=0,1", "mixer=vdn,qmix", "env=matrix"],
                                  ["mixer=duelmix", "mixer.central_info=noise", "data.env_workers=auto"],
                                  ["experiment=benchmarl/vmas", "data.sample=episodes", "data.batch_size=1"],
                                  ["env=vmas", "+env.scenario.n_agents=3"]])
def test_good_command_lines_pass(argv):
    preflight(argv)


@pytest.mark.parametrize("argv, fragment", [
    (["data.prioritized=no"], "data.prioritized=no is not a boolean; allowed: true or false"),
    (["env=matrix", "env.payoff=[[1,2],[3]]"], "env.payoff=[[1, 2], [3]] is not a table of numbers"),
    (["-m", "seed=0,1", "data.batch_size=true"], "data.batch_size=true has the wrong type"),
])
def test_train_py_exits_2_with_one_line_and_leaves_nothing_on_disk(tmp_path, argv, fragment):
    out = tmp_path / "outputs"
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *argv, f"hydra.run.dir={out}/run",
                           f"hydra.sweep.dir={out}/sweep"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert list(tmp_path.iterdir()) == []  # no run folder, no outputs/, no multirun/


def test_the_default_config_is_valid_and_typed(make_config):
    cfg = validate(make_config([]))
    assert cfg.env.name == "box_pushing" and cfg.mixer.name == "qfix_sum" and cfg.data.batch_size == 32


def test_two_runs_named_alike_get_two_folders(tmp_path):
    from lightning_marl.cli import folders

    folders._MADE.clear()
    first = unique_dir(str(tmp_path / "12-00-00_matrix_vdn_s0"))
    folders._MADE.clear()  # as a second process would
    second = unique_dir(str(tmp_path / "12-00-00_matrix_vdn_s0"))
    assert first != second and Path(first).is_dir() and Path(second).is_dir()
    assert unique_dir(str(tmp_path / "12-00-00_matrix_vdn_s0")) == second  # one process: one folder


def test_two_train_py_started_together_write_two_folders(tmp_path):
    args = [sys.executable, str(ROOT / "train.py"), "env=matrix", "mixer=vdn", "total_env_steps=16",
            "data.warmup_episodes=8", "data.batch_size=8", "trainer.enable_progress_bar=false", "seed=1"]
    procs = [subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-2000:]
    runs = sorted(p.parent.parent for p in (tmp_path / "outputs").rglob(".hydra/config.yaml"))
    assert len(runs) == 2 and all((r / "checkpoints" / "last.ckpt").is_file() for r in runs)


def saved_run(tmp_path, make_config, overrides) -> Path:
    """A run folder as train.py leaves it: its config, and a checkpoint with the counters and
    hyperparameters that resume reads (no weights: these tests stop before training)."""
    import torch

    from lightning_marl.config import plain

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    cfg = make_config(overrides)
    typed = validate(cfg)
    torch.save({"state_dict": {}, "MARLDataModule": {"env_steps": 0}, "global_step": 0,
                "hyper_parameters": {"agent": plain(typed.agent), "mixer": plain(typed.mixer)}},
               run / "checkpoints" / "last.ckpt")
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    return run


@pytest.mark.parametrize("override, message", [
    ("env.grid=6", "env.grid=6 is not an option of env (matrix) of this run; allowed: timeout_as_terminal, game"),
    ("mixer.w_hidden=32", "mixer.w_hidden=32 is not an option of mixer (qmix) of this run; allowed: central_info"),
    ("mixer=vdn", "mixer=vdn changes a config group of a resumed run"),
    ("learner.double_q=no", "learner.double_q=no is not a boolean"),
    ("total_env_steps=0", "total_env_steps=0 is out of range; allowed: an integer >= 1"),
])
def test_resume_overrides_are_checked_against_the_runs_own_config(tmp_path, make_config, override, message):
    run = saved_run(tmp_path, make_config, ["env=matrix", "mixer=qmix"])
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_resume(str(run), [f"resume={run}", override])


def test_resume_overrides_of_the_runs_own_options_are_taken(tmp_path, make_config):
    run = saved_run(tmp_path, make_config, ["env=matrix", "mixer=qmix"])
    plan = plan_resume(str(run), [f"resume={run}", "learner.lr=0.0005", "total_env_steps=777"])
    typed, run_dir = plan.typed, plan.run_dir
    assert typed.learner.lr == 0.0005 and typed.total_env_steps == 777 and run_dir == run


def test_a_config_saved_by_an_older_version_still_resumes(tmp_path, make_config):
    run = saved_run(tmp_path, make_config, ["env=overcooked", "mixer=qmix"])
    saved = OmegaConf.to_container(OmegaConf.load(run / ".hydra" / "config.yaml"))
    # as an older version wrote it: collection settings in env, another key name, new keys absent
    saved["env"].update(parallel=False, start_method="fork", shaping_anneal_steps=1234)
    saved["data"]["worker_start_method"] = saved["data"].pop("start_method")
    for key in ("env_workers",):
        saved["data"].pop(key)
    saved["learner"].pop("td_loss_scale")
    saved["learner"].pop("shaping_anneal_steps")
    saved["learner"]["compile"] = False
    saved["data"]["async_collection"] = True  # the collector thread, since replaced by TorchRL's worker processes
    OmegaConf.save(OmegaConf.create(saved), run / ".hydra" / "config.yaml")
    typed = plan_resume(str(run), [f"resume={run}"]).typed
    assert str(typed.data.env_workers) == "in_process" and str(typed.data.start_method) == "fork"
    assert typed.learner.shaping_anneal_steps == 1234 and typed.learner.compile is None
    assert typed.learner.td_loss_scale == 1.0  # what that version minimized: the run goes on as it was
    assert typed.data.collector_processes == 1  # still collecting beside the learner
