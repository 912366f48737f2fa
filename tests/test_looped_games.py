"""Games batched in this process (envs/batching.LoopedGames, env.workers=in_process for LBF, RWARE and
MPE) play exactly as the same games stepped one by one through their own EnvBase (what a worker
process of a ParallelEnv runs): full steps, partial steps, partial resets, specs and RNG state."""
from __future__ import annotations

import importlib.util

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import check_env_specs

import lightning_marl as lm
from lightning_marl.envs.batching import LoopedGames
from lightning_marl.envs.contract import ACTION, MASK, OBS

FAMILIES = [
    pytest.param("lbf", {"key": "Foraging-8x8-2p-2f-coop-v3"},
                 marks=pytest.mark.skipif(importlib.util.find_spec("lbforaging") is None, reason="lbforaging")),
    pytest.param("mpe", {"task": "simple_speaker_listener"},
                 marks=pytest.mark.skipif(importlib.util.find_spec("mpe2") is None, reason="mpe2")),
]
KEYS = (OBS, MASK, "state", "reward", "done", "terminated", "truncated")


def single_games(name: str, options: dict, seed: int, n: int):
    if name == "lbf":
        from lightning_marl.envs.gymma import GymmaEnv
        return [GymmaEnv("lbf", options["key"], seed + i, "cpu", i, True) for i in range(n)]
    from lightning_marl.envs.mpe import MPEEnv
    return [MPEEnv(options["task"], 25, seed + i, "cpu", i) for i in range(n)]


def assert_rows_equal(batch_td, singles: dict, keys=KEYS):
    for i, single in singles.items():
        for key in keys:
            if key in single.keys(True):
                assert torch.equal(batch_td[i][key], single[key]), (i, key)


def random_actions(td, generator):
    mask = td[MASK]
    flat = torch.multinomial(mask.flatten(0, -2).float(), 1, generator=generator)
    return flat.view(mask.shape[:-1])


@pytest.mark.parametrize("name, options", FAMILIES)
def test_looped_games_play_as_the_games_one_by_one(name, options):
    env = lm.make_env(name, num_envs=3, seed=7, workers="in_process", **options)
    games = single_games(name, options, 7, 3)
    try:
        assert isinstance(env, LoopedGames)
        check_env_specs(env)
        env.close()
        env = lm.make_env(name, num_envs=3, seed=7, workers="in_process", **options)
        gen = torch.Generator().manual_seed(0)
        td = env.reset()
        assert_rows_equal(td, {i: g.reset() for i, g in enumerate(games)}, KEYS[:3])
        for _ in range(3):  # full steps
            td.set(ACTION, random_actions(td, gen))
            nxt = env.step(td)["next"]
            assert_rows_equal(nxt, {i: g.step(td[i].clone())["next"] for i, g in enumerate(games)})
            td = nxt
        # a partial step: game 1 waits; its row is discarded by TorchRL, its game untouched
        td.set(ACTION, random_actions(td, gen)).set("_step", torch.tensor([True, False, True]))
        nxt = env.step(td)["next"]
        assert_rows_equal(nxt, {i: games[i].step(td[i].exclude("_step").clone())["next"] for i in (0, 2)})
        assert env.games[1]._t == games[1]._t == 3 and env.games[0]._t == 4
        # a partial reset: only game 1 starts again
        restarted = env.reset(TensorDict({"_reset": torch.tensor([[False], [True], [False]])}, batch_size=[3]))
        assert_rows_equal(restarted, {1: games[1].reset()}, KEYS[:3])
        assert env.games[1]._t == 0 and env.games[0]._t == 4
        # RNG state: one per game, as the games keep it
        states = env.rng_state()
        assert len(states) == 3 and all(torch.equal(s, g.rng_state()) for s, g in zip(states, games))
    finally:
        env.close()
        for game in games:
            game.close()


@pytest.mark.skipif(importlib.util.find_spec("lbforaging") is None, reason="lbforaging")
def test_a_game_that_ends_early_stops_while_the_others_play_on():
    env = lm.make_env("lbf", num_envs=2, key="Foraging-8x8-2p-2f-coop-v3", seed=1, workers="in_process")
    try:
        td = env.reset()
        env.games[0]._game.field[:] = 0  # every food item collected: game 0 ends at its next step
        roll = env.rollout(50, lambda td: td.set(ACTION, torch.zeros_like(td[MASK][..., 0], dtype=torch.long)),
                           tensordict=td, auto_reset=False, break_when_any_done=False, break_when_all_done=True)
        nxt = roll["next"]
        assert nxt["terminated"][0, 0].item() and not nxt["truncated"][0, 0].item()
        assert nxt["truncated"][1, -1].item() and roll.shape == (2, 50)
        assert env.games[0]._t == 1 and env.games[1]._t == 50  # game 0 was not stepped after its end
    finally:
        env.close()


@pytest.mark.parametrize("name, options", [
    pytest.param("lbf", {"key": "Foraging-5x5-2p-1f-v3"},  # small: some games end early, some play to the limit
                 marks=pytest.mark.skipif(importlib.util.find_spec("lbforaging") is None, reason="lbforaging")),
    FAMILIES[1]])
def test_play_is_torchrls_rollout_bitwise(name, options):
    from lightning_marl.data.collector import acting
    from lightning_marl.models.agent import RNNAgent
    from lightning_marl.models.policy import RecurrentPolicy

    envs = [lm.make_env(name, num_envs=6, seed=3, workers="in_process", **options) for _ in range(2)]
    torch.manual_seed(0)
    agent = RNNAgent(envs[0].obs_dim, envs[0].n_agents, envs[0].n_actions, hidden_dim=16, agent_id=True,
                     last_action=True, dueling=False, torso="mlp", obs_grid_shape=None, recurrent=True,
                     activation="relu")
    policies = [RecurrentPolicy(agent, 0.7, generator=torch.Generator().manual_seed(5)) for _ in range(2)]
    try:
        ended_early = False
        for _ in range(3):  # rounds: games continue their RNG from round to round
            fast = envs[0].play(acting(policies[0]), envs[0].episode_limit)
            slow = envs[1].rollout(envs[1].episode_limit, policy=policies[1], auto_reset=True,
                                   break_when_any_done=False, break_when_all_done=True)
            assert fast.batch_size == slow.batch_size
            for key in fast.keys(True, True):
                assert fast[key].dtype == slow[key].dtype and torch.equal(fast[key], slow[key]), key
            done = fast["next", "done"].squeeze(-1)
            ended_early |= bool((done.float().argmax(1) < done.shape[1] - 1).any())
        assert ended_early or name == "mpe"  # the rows of games that ended repeat their last step's
        assert torch.equal(policies[0].generator.get_state(), policies[1].generator.get_state())
    finally:
        for env in envs:
            env.close()
