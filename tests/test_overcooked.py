"""Overcooked behind the TorchRL contract: shapes per layout, the action mapping (a scripted soup),
truncation at the horizon, batching (SerialEnv / ParallelEnv) and the shaping-factor callback."""
from __future__ import annotations

import functools
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torchrl.envs import ParallelEnv, SerialEnv
from torchrl.envs.utils import check_env_specs, step_mdp

from lightning_marl import envs
from lightning_marl.callbacks.reward_shaping import RewardShapingAnnealing, shaping_factor
from lightning_marl.config import load
from lightning_marl.envs.contract import ACTION, MASK, OBS
from lightning_marl.envs.overcooked import CLASSIC_LAYOUTS, OvercookedEnv, render_episode
from lightning_marl.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]

# the env tests need the optional package (the shaping-callback test does not)
make_env = functools.partial(envs.make_env, "overcooked")


DRAWN = {"horizon": 400, "obs": "featurized", "state": "concat"}  # the game render_episode draws


def game(**options) -> OvercookedEnv:
    """One game with the config's defaults for the options not given (checked by the config)."""
    return OvercookedEnv(**envs.env_config({"name": "overcooked", **options}).options())
needs_overcooked = pytest.mark.skipif(importlib.util.find_spec("overcooked_ai_py") is None,
                                      reason="overcooked-ai is not installed (pip install 'lightning_marl[overcooked]')")

N, S, E, W, STAY, INTERACT = range(6)
# (W, H) of each classic layout's grid
GRIDS = {"cramped_room": (5, 4), "asymmetric_advantages": (9, 5), "coordination_ring": (5, 5),
         "forced_coordination": (5, 5), "counter_circuit_o_1order": (8, 5)}

# Chef 0 cooks one onion soup alone on cramped_room while chef 1 stays. Grid (x right, y down):
#   XXPXX     pot (2,0); onion dispensers (0,1), (4,1); dish dispenser (1,3); serving (3,3);
#   O  2O     chef 0 starts at (1,2), chef 1 at (3,1), both facing north.
#   X1  X     Moving into a non-floor cell only turns the chef to face it.
#   XDXSX
SOUP_SCRIPT = (
    [N, W, INTERACT, E, N, INTERACT]          # onion 1: up to (1,1), face O, take; (2,1), face pot, put (+3 at 6)
    + [W, INTERACT, E, N, INTERACT] * 2       # onions 2, 3 (+3 at 11 and 16)
    + [INTERACT]                              # empty-handed interact at the full pot starts cooking (step 17)
    + [W, S, S, INTERACT]                     # dish from (1,2) facing south (+3 at 21: useful dish pickup)
    + [N, E, N] + [STAY] * 12                 # back in front of the pot; the soup cooks 20 ticks (ready at 36)
    + [INTERACT]                              # soup into the dish (+5 at 37)
    + [S, E, S, INTERACT]                     # to (3,2), face the serving window, deliver: +20 at step 41
)
SOUP_STEP = 41
SHAPED_STEPS = {6: 3.0, 11: 3.0, 16: 3.0, 21: 3.0, 37: 5.0}


def _play(env: OvercookedEnv, script, other=STAY):
    """Step ``env`` through chef 0's ``script`` (chef 1 plays ``other``); returns the "next" tds."""
    td = env.reset()
    out = []
    for a in script:
        td.set(ACTION, torch.tensor([a, other]))
        td = env.step(td)
        out.append(td.get("next").clone())
        td = step_mdp(td)
    return out


@needs_overcooked
@pytest.mark.parametrize("layout", CLASSIC_LAYOUTS)
def test_layouts_reset_and_step_with_documented_shapes(layout):
    env = game(layout=layout, horizon=10)
    assert (env.n_agents, env.n_actions, env.episode_limit) == (2, 6, 10)
    assert env.stat_keys == ("soups", "sparse_return", "shaped_return", "deliveries")
    roll = env.rollout(3)
    assert roll[OBS].shape == (3, 2, 96) and roll[OBS].dtype == torch.float32
    assert roll["state"].shape == (3, 192)
    assert torch.equal(roll["state"][0], roll[OBS][0].reshape(-1))  # both observations concatenated
    assert roll[MASK].shape == (3, 2, 6) and roll[MASK].all()
    assert roll[ACTION].shape == (3, 2) and roll[ACTION].dtype == torch.int64
    for key in ("reward", "shaped_reward", "soups", "sparse_return", "shaped_return", "done", "terminated",
                "truncated"):
        assert roll["next", key].shape == (3, 1), key
    assert roll["soups"].sum() == 0  # zeros at reset
    assert not roll["next", "done"].any()
    width, height = GRIDS[layout]
    assert env.obs_grid_shape == (26, width, height)


@needs_overcooked
def test_lossless_observations_and_global_state():
    env = game(layout="asymmetric_advantages", obs="lossless", state="lossless_global")
    check_env_specs(env)
    td = env.reset()
    cells = 26 * 9 * 5
    assert td[OBS].shape == (2, cells) and td["state"].shape == (cells,)
    grids = td[OBS].view(2, *env.obs_grid_shape)  # (agent, channel, x, y)
    me, other = env.state.players[0].position, env.state.players[1].position
    assert grids[0, 0, me[0], me[1]] == 1 and grids[0, 0].sum() == 1  # channel 0: my own position
    assert grids[1, 0, other[0], other[1]] == 1 and grids[1, 1, me[0], me[1]] == 1  # chef 1's view
    assert torch.equal(td["state"], td[OBS][0])  # the global grid is chef 0's view: it holds both chefs
    mixed = game(layout="cramped_room", obs="featurized", state="lossless_global").reset()
    assert mixed[OBS].shape == (2, 96) and mixed["state"].shape == (26 * 5 * 4,)


@needs_overcooked
def test_scripted_soup_reward_arrives_at_the_right_step():
    env = game(layout="cramped_room")
    from overcooked_ai_py.mdp.actions import Action

    assert env._actions == list(Action.INDEX_TO_ACTION)
    steps = _play(env, SOUP_SCRIPT[:1])
    assert env.state.players[0].position == (1, 1) and env.state.players[0].orientation == (0, -1)  # 0 = north
    assert env.state.players[1].position == (3, 1)  # 4 = stay
    steps = _play(env, SOUP_SCRIPT)
    assert len(SOUP_SCRIPT) == SOUP_STEP
    rewards = [float(td["reward"]) for td in steps]
    assert rewards[SOUP_STEP - 1] == 20.0 and sum(rewards) == 20.0
    shaped = {i + 1: float(td["shaped_reward"]) for i, td in enumerate(steps) if float(td["shaped_reward"])}
    assert shaped == SHAPED_STEPS
    last = steps[-1]
    assert (float(last["soups"]), float(last["sparse_return"]), float(last["shaped_return"])) == (1.0, 20.0, 17.0)
    assert float(last["deliveries"]) == 1.0
    assert float(steps[SOUP_STEP - 2]["soups"]) == 0.0
    assert "t=41/400 soups=1" in env.render()
    # a 1-onion soup is delivered too but is off the recipe: no sparse reward, a delivery, not a soup
    one_onion = SOUP_SCRIPT[:6] + [INTERACT] + SOUP_SCRIPT[17:24] + [STAY] * 20 + SOUP_SCRIPT[36:]
    last = _play(env, one_onion)[-1]
    assert (float(last["deliveries"]), float(last["soups"]), float(last["sparse_return"])) == (1.0, 0.0, 0.0)
    assert float(last["shaped_return"]) == 11.0  # onion 3 + dish 3 + soup pickup 5
    # one tick too early at the pot: no soup is picked up and nothing is delivered
    early = SOUP_SCRIPT[:24] + [STAY] * 11 + SOUP_SCRIPT[36:]
    assert sum(float(td["reward"]) for td in _play(env, early)) == 0.0


@needs_overcooked
def test_horizon_is_a_truncation_not_a_terminal():
    env = game(layout="forced_coordination", horizon=4)
    roll = env.rollout(10)
    assert roll.batch_size == (4,)
    assert roll["next", "done"].squeeze(-1).tolist() == [False, False, False, True]
    assert roll["next", "truncated"].squeeze(-1).tolist() == [False, False, False, True]
    assert not roll["next", "terminated"].any()


@needs_overcooked
def test_unknown_layout_names_the_value_and_the_allowed_ones():
    with pytest.raises(ConfigError, match="not_a_kitchen") as err:
        game(layout="not_a_kitchen")
    assert "cramped_room" in str(err.value) and "counter_circuit_o_1order" in str(err.value)
    with pytest.raises(ConfigError, match="cramped_room_single"):  # one chef: not a two-agent layout
        make_env(layout="cramped_room_single")
    with pytest.raises(ConfigError, match="env.obs=pixels .*; allowed: featurized or lossless"):
        game(obs="pixels")
    with pytest.raises(ConfigError, match="env.horizon=0 is out of range"):
        make_env(horizon=0)


def _close(env) -> None:
    if not env.is_closed:  # a batched env that never started has nothing to close
        env.close()


def _fixed_actions(steps: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 6, (steps, 2, 2), generator=torch.Generator().manual_seed(seed))


def _batch_matches_single_games(env, actions: torch.Tensor, horizon: int) -> None:
    singles = [game(layout="coordination_ring", horizon=horizon) for _ in range(2)]
    td = env.reset()
    ref = [s.reset() for s in singles]
    for t in range(actions.shape[0]):
        td.set(ACTION, actions[t])
        td = env.step(td)
        for i, s in enumerate(singles):
            ref[i].set(ACTION, actions[t, i])
            ref[i] = s.step(ref[i])
            for key in (OBS, "state", "reward", "shaped_reward", "shaped_return", "done", "truncated"):
                assert torch.equal(td["next"][i].get(key), ref[i]["next"].get(key)), (t, i, key)
            ref[i] = step_mdp(ref[i])
        td = step_mdp(td)


@needs_overcooked
@pytest.mark.parametrize("parallel", [False, True])
def test_batch_of_two_behaves_like_two_single_games(parallel):
    horizon = 6
    env = make_env(num_envs=2, seed=7, layout="coordination_ring", horizon=horizon, workers="processes" if parallel else "in_process")
    try:
        assert isinstance(env, ParallelEnv if parallel else SerialEnv)
        assert env.batch_size == (2,)
        assert (env.n_agents, env.n_actions, env.episode_limit) == (2, 6, horizon)
        assert env.stat_keys == ("soups", "sparse_return", "shaped_return", "deliveries")
        assert env.obs_grid_shape == (26, 5, 5)
        _batch_matches_single_games(env, _fixed_actions(horizon, seed=3), horizon)
        # answered in this process (a ParallelEnv would forward unknown names to its workers)
        env.set_rng_state(env.rng_state())
        roll = env.rollout(20, break_when_any_done=False, break_when_all_done=True)
        assert roll.batch_size == (2, horizon) and roll["next", "truncated"][:, -1].all()
    finally:
        _close(env)


@needs_overcooked
@pytest.mark.parametrize("parallel, threads", [(False, 1), (True, 2)])
def test_a_batch_leaves_the_runs_torch_threads_as_they_were(parallel, threads):
    """The run's ``threads`` setting stands: TorchRL's batched ``close`` raises the thread count by the
    number of games and its ``ParallelEnv`` start lowers it by the number of workers."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        env = make_env(num_envs=2, horizon=5, workers="processes" if parallel else "in_process")
        try:
            env.rollout(3)
            during = torch.get_num_threads()
        finally:
            env.close()
        assert (during, torch.get_num_threads()) == (threads, threads)
    finally:
        torch.set_num_threads(before)


@needs_overcooked
def test_partial_steps_freeze_finished_games():
    env = SerialEnv(2, [functools.partial(game, horizon=3), functools.partial(game, horizon=5)])
    try:
        roll = env.rollout(20, break_when_any_done=False, break_when_all_done=True)
        assert roll.batch_size == (2, 5)
        assert roll["next", "done"].squeeze(-1).tolist() == [[False, False, True, True, True],
                                                             [False, False, False, False, True]]
        assert not roll["next", "terminated"].any()
    finally:
        _close(env)


@needs_overcooked
def test_parallel_auto_steps_in_turn_on_few_cores(monkeypatch):
    import lightning_marl.envs.batching as batching

    monkeypatch.setattr(batching, "available_cpus", lambda: 2)
    env = make_env(num_envs=2, horizon=5, workers="auto")
    assert isinstance(env, SerialEnv)
    _close(env)
    with pytest.raises(ConfigError, match="data.env_workers=sometimes is out of range; allowed: auto, processes"):
        make_env(num_envs=2, workers="sometimes")


@needs_overcooked
def test_make_env_single_game_is_a_batch_of_one():
    env = make_env(num_envs=1, horizon=5)
    assert isinstance(env, SerialEnv) and env.batch_size == (1,)
    assert env.rollout(10)[OBS].shape == (1, 5, 2, 96)
    _close(env)


@needs_overcooked
def test_render_episode_text_and_gif(tmp_path):
    script = [[a, STAY] for a in SOUP_SCRIPT]
    info = render_episode("cramped_room", script, tmp_path / "soup.txt", **DRAWN)
    assert info["steps"] == SOUP_STEP and info["soups"] == 1 and info["sparse_return"] == 20.0
    text = (tmp_path / "soup.txt").read_text()
    assert text.count("--- step") == SOUP_STEP + 1 and "t=0/400" in text and "soups=1" in text

    def stay(td):
        td.set(ACTION, torch.full((2,), STAY))
        return td

    info = render_episode("cramped_room", stay, tmp_path / "stay.gif", **{**DRAWN, "horizon": 3})
    assert info["steps"] == 3 and Path(info["path"]).exists()  # a GIF, or text frames without pygame


# ----------------------------------------------------------------------------- shaping annealing

class _FakeModule:
    def __init__(self):
        self.reward_shaping_factor = 1.0


def test_shaping_factor_anneals_linearly_to_zero():
    cb = RewardShapingAnnealing(anneal_steps=1000)
    trainer = SimpleNamespace(datamodule=SimpleNamespace(env_steps=0))
    module = _FakeModule()
    cb.on_train_start(trainer, module)
    assert module.reward_shaping_factor == 1.0
    seen = []
    for steps in (0, 250, 500, 1000, 5000):
        trainer.datamodule.env_steps = steps
        cb.on_train_batch_start(trainer, module, None, 0)
        seen.append(module.reward_shaping_factor)
        assert cb.logged_values() == {"shaping_factor": module.reward_shaping_factor}  # what training rows get
    assert seen == [1.0, 0.75, 0.5, 0.0, 0.0]
    state = cb.state_dict()
    again = RewardShapingAnnealing(anneal_steps=1000)
    again.load_state_dict(state)
    assert again.value == 0.0
    assert shaping_factor(10, 0) == 0.0  # 0 steps = no shaping at all
    with pytest.raises(AssertionError):  # the config refuses it first
        RewardShapingAnnealing(anneal_steps=-1)


@needs_overcooked
def test_training_on_overcooked_anneals_the_shaping_factor(tmp_path):
    import pandas as pd

    from lightning_marl.experiment import run

    cfg = load(["env=overcooked", "env.horizon=10", "data.env_workers=in_process", "learner.shaping_anneal_steps=100",
                   "mixer=qmix", "total_env_steps=160", "data.warmup_episodes=2", "data.batch_size=2",
                   "eval.episodes=2", "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false"])
    run(cfg, tmp_path)
    factor = pd.read_csv(tmp_path / "metrics.csv")["shaping_factor"].dropna()
    assert factor.iloc[0] > 0.5 and factor.iloc[-1] == 0.0

    # scripts/evaluate.py --gif draws the checkpoint's greedy episode: the same episode the greedy
    # evaluation plays (the game is deterministic)
    gif = tmp_path / "greedy.gif"
    proc = subprocess.run([sys.executable, "scripts/evaluate.py", str(tmp_path / "checkpoints" / "last.ckpt"),
                           "--episodes", "2", "--json", "--gif", str(gif)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    drawn = result["gif"]
    assert drawn["steps"] == result["length"]["mean"] == 10 and Path(drawn["path"]).exists()
    for key in ("soups", "sparse_return", "shaped_return"):
        assert drawn[key] == result[key]["mean"]


@needs_overcooked
def test_training_on_lossless_grids_with_the_cnn_torso(tmp_path):
    """env.obs=lossless with agent.torso=cnn: the learner gets the grid shape from the env and
    trains the convolution filters."""
    import torch as th

    from lightning_marl.experiment import run

    cfg = load(["env=overcooked", "env.obs=lossless", "env.horizon=10", "data.env_workers=in_process", "agent.torso=cnn",
                   "mixer=qmix", "total_env_steps=120", "data.warmup_episodes=2", "data.batch_size=2",
                   "checkpoint.every_n_updates=1", "checkpoint.keep_all=true", "eval.episodes=2",
                   "trainer.enable_progress_bar=false"])
    run(cfg, tmp_path)
    ckpts = sorted((tmp_path / "checkpoints").glob("step*.ckpt"), key=lambda p: int(p.stem[4:]))
    first, last = (th.load(p, map_location="cpu", weights_only=False) for p in (ckpts[0], ckpts[-1]))
    assert first["hyper_parameters"]["env_info"]["obs_grid_shape"] == [26, 5, 4]
    conv = "agent.torso.net.0.weight"
    assert last["state_dict"][conv].shape == (32, 26, 3, 3)
    assert not th.equal(first["state_dict"][conv], last["state_dict"][conv])


@needs_overcooked
def test_describe_env_reads_a_batch_of_worker_processes_without_asking_the_workers():
    """describe_env on a ParallelEnv (one worker per game) must not query attributes through the
    workers: a name their game lacks kills them (BENCHMARKS.md's SMACLite command crashed on it)."""
    from torchrl.envs import ParallelEnv

    from lightning_marl.config.schema import EnvWorkers
    from lightning_marl.data.environments import describe_env
    from lightning_marl.envs import make_env as make_any_env

    for obs, grid in (("featurized", None), ("lossless", [26, 5, 4])):
        env = make_any_env("overcooked", 2, 0, obs=obs, horizon=5, workers=EnvWorkers.processes, start_method="fork")
        try:
            assert isinstance(env, ParallelEnv)
            info = describe_env(env)
            assert info["obs_grid_shape"] == grid and info["n_agents"] == 2
            assert env.rollout(3)[OBS].shape[:3] == (2, 3, 2)  # the workers are alive after it
        finally:
            env.close()


@needs_overcooked
def test_game_workers_leave_sigint_and_sigterm_to_the_trainer():
    """Ctrl+C reaches the whole process group: the game workers must survive it (the trainer stops
    after its update, writes its checkpoint and closes them)."""
    import os
    import signal

    from tests.test_resume import _children

    before = set(_children(os.getpid()))
    env = make_env(num_envs=2, horizon=5, workers="processes", start_method="fork")
    try:
        env.rollout(2)
        workers = set(_children(os.getpid())) - before  # this env's two game workers
        assert len(workers) == 2
        for pid in workers:
            os.kill(pid, signal.SIGINT)
            os.kill(pid, signal.SIGTERM)
        assert env.rollout(3)[OBS].shape[:2] == (2, 3)  # both still step
    finally:
        _close(env)


@needs_overcooked
def test_a_batch_of_games_renders_the_game_asked_for():
    """``--render`` asks the batch for one game's text (not a list of every game's)."""
    env = envs.make_env("overcooked", num_envs=2, seed=0, layout="cramped_room", horizon=5, workers="in_process")
    env.reset()
    joint = torch.tensor([[0, 4], [4, 4]])  # game 0's first chef moves, game 1 stays
    env.step(env.reset().set(ACTION, joint))
    first, second = env.render(0), env.render(1)
    assert isinstance(first, str) and isinstance(second, str) and first != second
    env.close()
