"""Box Pushing: hand-worked trajectories, layouts, batching, resets, seeding."""
from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import check_env_specs

from lightning_marl import envs
from lightning_marl.config import load
from lightning_marl.envs import make_env as make_any_env
from lightning_marl.envs.box_pushing import ALLOWED_GRIDS
from lightning_marl.envs.contract import ACTION, MASK, OBS
from lightning_marl.errors import ConfigError

make_env = functools.partial(envs.make_env, "box_pushing")

F, L, R, S = 0, 1, 2, 3  # forward, turn left, turn right, stay
SMALL, BIG, EMPTY, WALL, MATE = range(5)


def act(env, *joint):
    """Step every game of ``env`` with the joint action(s); return the "next" tensordict."""
    actions = torch.tensor(joint, dtype=torch.long)
    if actions.dim() == 1:
        actions = actions.expand(env.batch_size[0], -1)
    td = TensorDict({ACTION: actions}, batch_size=env.batch_size)
    return env.step(td)["next"]


def play(env, joint_actions):
    env.reset()
    return [act(env, *joint) for joint in joint_actions]


def centres(state, n_agents=2):
    """Agent (x, y) centres, orientations and box centres in grid units from a state vector
    already multiplied by the grid size (rounded to the half-integers they must be)."""
    agents = state[: 6 * n_agents].reshape(n_agents, 6)
    boxes = state[6 * n_agents:].reshape(3, 2)
    half = lambda x: (x * 2).round() / 2  # noqa: E731
    assert torch.allclose(half(agents[:, :2]), agents[:, :2], atol=1e-5)
    assert torch.allclose(half(boxes), boxes, atol=1e-5)
    return half(agents[:, :2]), agents[:, 2:].argmax(-1), half(boxes)


def test_specs_and_shapes():
    for n_agents, state_dim in ((2, 18), (3, 24)):
        env = make_env(num_envs=3, n_agents=n_agents)
        check_env_specs(env)
        td = env.reset()
        assert td[OBS].shape == (3, n_agents, 5) and td[OBS].dtype == torch.float32
        assert td[MASK].shape == (3, n_agents, 4) and td[MASK].all()
        assert td["state"].shape == (3, state_dim)
        assert env.n_actions == 4 and env.episode_limit == 100 and env.n_agents == n_agents
        for key in env.stat_keys:
            assert td[key].shape == (3, 1) and (td[key] == 0).all()


def test_layouts_match_design():
    env = make_env(grid=4)
    pos, ori, boxes = centres(env.reset()["state"][0] * 4)
    assert pos.tolist() == [[0.5, 0.5], [3.5, 0.5]] and ori.tolist() == [1, 3]  # east, west
    assert boxes.tolist() == [[0.5, 2.5], [3.5, 2.5], [2.0, 2.5]]
    env = make_any_env("box_pushing", grid=6)
    pos, ori, boxes = centres(env.reset()["state"][0] * 6)
    assert pos[:, 1].tolist() == [1.5, 1.5] and boxes[:, 1].tolist() == [3.5, 3.5, 3.5]
    assert boxes[2].tolist() == [3.0, 3.5]
    for n in (8, 14, 30):
        env = make_env(grid=n)
        pos, ori, boxes = centres(env.reset()["state"][0] * n)
        assert pos.tolist() == [[1.5, 1.5], [n - 1.5, 1.5]] and ori.tolist() == [1, 3]
        assert boxes.tolist() == [[1.5, n / 2 + 0.5], [n - 1.5, n / 2 + 0.5], [n / 2, n / 2 + 0.5]]
    env = make_env(grid=4, n_agents=3)
    pos, ori, _ = centres(env.reset()["state"][0] * 4, 3)
    assert pos[2].tolist() == [1.5, 0.5] and ori[2].item() == 0  # under the big box's left half


def test_optimal_4x4_play_returns_99_9_at_step_4():
    env = make_env()
    outs = play(env, [(F, F), (L, R), (F, F), (F, F)])
    rewards = [round(o["reward"].item(), 4) for o in outs]
    assert rewards == [-0.1, -0.1, -0.1, 99.9]
    assert [o["done"].item() for o in outs] == [False, False, False, True]
    assert outs[-1]["terminated"].item() and not outs[-1]["truncated"].item()
    assert outs[-1]["big_box"].item() == 1.0 and outs[-1]["small_boxes"].item() == 0.0
    # before the push both agents see the big box in front of them
    assert outs[2][OBS][0, :, BIG].tolist() == [1.0, 1.0]
    _, _, boxes = centres(outs[-1]["state"][0] * 4)
    assert boxes[2].tolist() == [2.0, 3.5]


def test_optimal_4x4_play_with_three_agents():
    env = make_env(n_agents=3)
    outs = play(env, [(S, F, F), (S, R, S), (S, F, S), (S, F, F)])
    assert [round(o["reward"].item(), 4) for o in outs] == [-0.1, -0.1, -0.1, 99.9]
    assert outs[-1]["terminated"].item()


def test_small_box_pushed_home_returns_9_9():
    env = make_env()
    outs = play(env, [(L, S), (F, S), (F, S)])
    assert [round(o["reward"].item(), 4) for o in outs] == [-0.1, -0.1, 9.9]
    assert outs[1][OBS][0, 0].tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]  # small box ahead
    assert outs[-1]["terminated"].item() and outs[-1]["small_boxes"].item() == 1.0
    pos, _, boxes = centres(outs[-1]["state"][0] * 4)
    assert boxes[0].tolist() == [0.5, 3.5] and pos[0].tolist() == [0.5, 2.5]


def test_wall_bump_costs_5_and_cancels_the_move():
    env = make_env()
    outs = play(env, [(R, S), (F, S)])  # agent 0 turns south and walks into the bottom wall
    assert outs[0][OBS][0, 0, WALL].item() == 1.0
    assert round(outs[1]["reward"].item(), 4) == -5.1
    pos, ori, _ = centres(outs[1]["state"][0] * 4)
    assert pos[0].tolist() == [0.5, 0.5] and ori[0].item() == 2
    both = act(env, F, S)  # agent 1 (facing west) moves fine, agent 0 bumps again
    assert round(both["reward"].item(), 4) == -5.1
    env.reset()
    act(env, R, L)  # both face south
    assert round(act(env, F, F)["reward"].item(), 4) == -10.1


def test_big_box_does_not_move_with_one_agent():
    env = make_env()
    outs = play(env, [(F, S), (L, S), (F, S), (F, S)])
    assert outs[2][OBS][0, 0, BIG].item() == 1.0
    assert round(outs[3]["reward"].item(), 4) == -5.1
    assert not outs[3]["done"].item()
    pos, _, boxes = centres(outs[3]["state"][0] * 4)
    assert boxes[2].tolist() == [2.0, 2.5] and pos[0].tolist() == [1.5, 1.5]
    # both agents under the same half, both pushing: still no move, two bumps
    env.reset()
    for joint in [(F, F), (S, F), (L, R), (F, F)]:
        act(env, *joint)
    assert round(act(env, F, F)["reward"].item(), 4) == -10.1


def test_small_box_sideways_is_a_bump():
    env = make_env(grid=8)  # small box 0 at (1.5, 4.5); agent 0 at (1.5, 1.5) facing east
    outs = play(env, [(L, S), (F, S), (F, S), (L, S), (F, S), (R, S), (F, S), (R, S)])
    assert [round(o["reward"].item(), 4) for o in outs] == [-0.1] * 8
    assert outs[-1][OBS][0, 0, SMALL].item() == 1.0  # at (0.5, 4.5) facing east, box ahead
    bump = act(env, F, S)
    assert round(bump["reward"].item(), 4) == -5.1
    pos, _, boxes = centres(bump["state"][0] * 8)
    assert pos[0].tolist() == [0.5, 4.5] and boxes[0].tolist() == [1.5, 4.5]


def test_agents_share_a_cell_without_blocking():
    env = make_env()
    outs = play(env, [(F, F), (S, F)])
    assert outs[0][OBS][0, :, MATE].tolist() == [1.0, 1.0]  # face to face
    assert round(outs[1]["reward"].item(), 4) == -0.1
    pos, _, _ = centres(outs[1]["state"][0] * 4)
    assert pos[0].tolist() == pos[1].tolist() == [1.5, 0.5]


def test_action_failures_at_configured_rate():
    games, p = 4000, 0.9
    env = make_env(num_envs=games, success_prob=p, seed=3)
    before = env.reset()["state"].reshape(games, -1)[:, :12].reshape(games, 2, 6)[..., 2:].argmax(-1)
    after = act(env, R, R)["state"][:, :12].reshape(games, 2, 6)[..., 2:].argmax(-1)
    failed = after == before
    trials = 2 * games
    expected, std = trials * (1 - p), math.sqrt(trials * p * (1 - p))
    assert abs(failed.sum().item() - expected) < 4 * std
    # independently per agent: both fail with probability (1 - p)^2
    both = failed.all(-1).sum().item()
    q = (1 - p) ** 2
    assert abs(both - games * q) < 4 * math.sqrt(games * q * (1 - q))
    # success_prob = 1: nothing fails
    sure = make_env(num_envs=256)
    sure.reset()
    turned = act(sure, R, R)["state"][:, :12].reshape(256, 2, 6)[..., 2:].argmax(-1)
    assert (turned == torch.tensor([2, 0])).all()


def test_batched_step_equals_games_stepped_one_by_one():
    games, steps = 12, 40
    gen = torch.Generator().manual_seed(7)
    # 1) random initial layouts copied into single-game envs, plain steps
    batch = make_env(num_envs=games, random_init=True, grid=6, seed=11)
    batch.reset()
    snap = batch.get_env_state()
    singles = []
    for i in range(games):
        single = make_env(num_envs=1, grid=6)
        single.reset()
        single.set_env_state({k: (v[i:i + 1] if k != "rng" else v) for k, v in snap.items()})
        singles.append(single)
    assert len({tuple(s.get_env_state()["pos"].flatten().tolist()) for s in singles}) > 1
    for _ in range(steps):
        actions = torch.randint(0, 4, (games, 2), generator=gen)
        out = batch.step(TensorDict({ACTION: actions}, batch_size=[games]))["next"]
        for i, single in enumerate(singles):
            one = single.step(TensorDict({ACTION: actions[i:i + 1]}, batch_size=[1]))["next"]
            for key in (OBS, "state", "reward", "done", "terminated", "truncated", "small_boxes", "big_box"):
                assert torch.equal(out[key][i:i + 1], one[key]), (key, i)
    # 2) fixed layouts, auto-resets through TorchRL (finished games reset, others continue)
    batch = make_env(num_envs=games, horizon=9)
    singles = [make_env(num_envs=1, horizon=9) for _ in range(games)]
    td = batch.reset()
    tds = [s.reset() for s in singles]
    n_done = 0
    for _ in range(steps):
        actions = torch.randint(0, 4, (games, 2), generator=gen)
        td.set(ACTION, actions)
        out, td = batch.step_and_maybe_reset(td)
        n_done += out["next", "done"].sum().item()
        for i, single in enumerate(singles):
            tds[i].set(ACTION, actions[i:i + 1])
            one, tds[i] = single.step_and_maybe_reset(tds[i])
            assert torch.equal(out["next", "reward"][i:i + 1], one["next", "reward"])
            assert torch.equal(out["next", "done"][i:i + 1], one["next", "done"])
            assert torch.equal(td["state"][i:i + 1], tds[i]["state"])
    assert n_done > games  # several episodes ended along the way


def test_time_limit_is_truncation_not_termination():
    env = make_env(horizon=3)
    outs = play(env, [(S, S)] * 3)
    assert [o["done"].item() for o in outs] == [False, False, True]
    assert not outs[-1]["terminated"].item() and outs[-1]["truncated"].item()
    assert [round(o["reward"].item(), 4) for o in outs] == [-0.1] * 3
    # a delivery on the last step is a termination, not a truncation
    env = make_env(horizon=4)
    last = play(env, [(F, F), (L, R), (F, F), (F, F)])[-1]
    assert last["terminated"].item() and not last["truncated"].item()


def test_partial_reset_resets_only_flagged_games():
    env = make_env(num_envs=4)
    env.reset()
    act(env, F, F)
    moved = act(env, L, R)
    before = env.get_env_state()
    flags = torch.tensor([[True], [False], [True], [False]])
    out = env.reset(moved.clone().set("_reset", flags))
    fresh = make_env(num_envs=1).reset()["state"][0]
    for i in (0, 2):
        assert torch.equal(out["state"][i], fresh)
    for i in (1, 3):
        assert torch.equal(out["state"][i], moved["state"][i]) and not torch.equal(out["state"][i], fresh)
    # the env itself kept the unflagged games (not only the tensordict TorchRL merged back)
    after = env.get_env_state()
    init = make_env(num_envs=1).get_env_state()
    for key in ("pos", "ori", "box"):
        assert torch.equal(after[key][[1, 3]], before[key][[1, 3]])
        assert torch.equal(after[key][[0, 2]], init[key].expand_as(after[key][[0, 2]]))
        assert not torch.equal(after[key][1], init[key][0]) or key == "box"
    # the step counters are per game
    assert env.get_env_state()["t"].tolist() == [0, 2, 0, 2]


def test_partial_step_and_rollout_until_all_done():
    env = make_env(num_envs=3)
    env.reset()
    td = TensorDict({ACTION: torch.full((3, 2), F), "_step": torch.tensor([True, False, True])}, batch_size=[3])
    env.step(td)
    state = env.get_env_state()
    assert state["t"].tolist() == [1, 0, 1]
    assert state["pos"][1].tolist() == [[0, 0], [3, 0]] and state["pos"][0].tolist() == [[1, 0], [2, 0]]

    # game 0 plays optimally (done at step 4), the others idle to the horizon
    env = make_env(num_envs=3, horizon=6)
    script = [(F, F), (L, R), (F, F), (F, F), (S, S), (S, S)]
    calls = []

    def policy(td):
        k = min(len(calls), len(script) - 1)
        calls.append(td.get("_step", None))
        actions = torch.full((3, 2), S)
        actions[0] = torch.tensor(script[k])
        td.set(ACTION, actions)
        return td

    roll = env.rollout(10, policy, break_when_any_done=False, break_when_all_done=True)
    assert roll.shape == (3, 6)
    assert roll["next", "reward"][0, 3].item() == pytest.approx(99.9)
    assert roll["next", "terminated"][0, 3].item()
    assert roll["next", "truncated"][1:, -1].all()
    # after game 0 finished it was no longer stepped: its step counter stayed at 4
    assert env.get_env_state()["t"].tolist() == [4, 6, 6]


def test_bad_sizes_raise_config_errors():
    for bad in (5, 7, 2, 32):
        with pytest.raises(ConfigError, match=rf"grid={bad}\b.*allowed: an even integer in \[4, 30\]"):
            make_env(grid=bad)
    with pytest.raises(ConfigError, match="n_agents=4"):
        make_env(n_agents=4)
    with pytest.raises(ConfigError, match="success_prob"):
        make_env(success_prob=0.0)
    assert ALLOWED_GRIDS[0] == 4 and ALLOWED_GRIDS[-1] == 30


def test_seeding_and_rng_state_restore():
    def starts(env):
        return env.reset()["state"].clone()

    a = make_env(num_envs=64, random_init=True, seed=5)
    b = make_env(num_envs=64, random_init=True, seed=5)
    c = make_env(num_envs=64, random_init=True, seed=6)
    first = starts(a)
    assert torch.equal(first, starts(b)) and not torch.equal(first, starts(c))
    saved = a.rng_state()
    assert torch.equal(saved, a.get_rng_state())
    second = starts(a)
    assert not torch.equal(first, second)
    a.set_rng_state(saved)
    assert torch.equal(starts(a), second)
    # random starts lie strictly below the boxes' row, all orientations occur
    ys = second[:, 1:12:6] * 4
    assert (ys < 2.0).all()
    oris = second[:, :12].reshape(64, 2, 6)[..., 2:].argmax(-1)
    assert set(oris.flatten().tolist()) == {0, 1, 2, 3}


def test_render():
    env = make_env()
    env.reset()
    text = env.render()
    assert "BB" in text and text.count("b") >= 2 and ">" in text and "<" in text and "goal" in text
    rows = text.splitlines()
    assert rows[1].startswith("|....|") and "goal" in rows[1] and rows[4] == "|>..<|"
    img = env.render_rgb()
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_runs_on_cuda():
    env = make_env(num_envs=8, device="cuda", success_prob=0.9, random_init=True)
    td = env.reset()
    assert td["state"].device.type == "cuda"
    td.set(ACTION, torch.zeros(8, 2, dtype=torch.long, device="cuda"))
    out = env.step(td)["next"]
    assert out["reward"].device.type == "cuda"


def test_evaluation_games_can_differ_from_training_games(make_config):
    """eval.env: train from random starts, evaluate from the fixed layout."""
    from lightning_marl.experiment import build_datamodule

    dm = build_datamodule(load(["env.random_init=true", "+eval.env.random_init=false"]))
    dm.setup()
    try:
        train_env, eval_env = dm.collection.env, dm.evaluator.env
        assert train_env.random_init and not eval_env.random_init
        fixed = make_env(num_envs=dm.eval_num_envs)
        assert torch.equal(eval_env.reset()["state"], fixed.reset()["state"])
        assert not torch.equal(train_env.reset()["state"], fixed.reset()["state"][:1].expand(dm.data.num_envs, -1))
    finally:
        dm.teardown()
