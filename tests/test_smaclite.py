"""SMACLite behind the TorchRL contract: shapes per map, masks over whole random episodes, the win
flag, time-outs as truncation, ParallelEnv = SerialEnv, map errors, and the install messages.

The error-message tests run always; the others need SMACLite (skipped cleanly without it).
"""
from __future__ import annotations

import functools
import importlib
import sys

import pytest
import torch
from torchrl.envs import ParallelEnv, SerialEnv
from torchrl.envs.utils import check_env_specs

from lightning_marl import envs
from lightning_marl.envs import smaclite as smaclite_env
from lightning_marl.envs.contract import ACTION, MASK, OBS
from lightning_marl.errors import ConfigError

make_smaclite = functools.partial(envs.make_env, "smaclite")


def game(map_name: str, seed: int = 0, **options):
    """One game with the config's defaults for the options not given (checked by the config)."""
    cfg = envs.env_config({"name": "smaclite", "map": map_name, **options})
    return smaclite_env.SMACliteEnv(seed=seed, device="cpu", **cfg.options())

INSTALL_COMMANDS = ("pip install --no-deps git+https://github.com/uoe-agents/smaclite.git",
                    'pip install "lightning_marl[smaclite]"', '"rtree>=1.1"', "gymnasium", "pygame", "scikit-learn")


# ----------------------------------------------------------------------------- always run

def test_missing_smaclite_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "smaclite", None)  # import smaclite -> ImportError
    for build in (lambda: smaclite_env.SMACliteEnv("2s3z", 0, "cpu", False, None), lambda: make_smaclite(num_envs=2)):
        with pytest.raises(ImportError) as info:
            build()
        for command in INSTALL_COMMANDS:
            assert command in str(info.value)


def test_missing_cpp_solver_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "rvo2", None)
    with pytest.raises(ImportError, match="SMAClite-Python-RVO2") as info:
        smaclite_env.check_cpp_rvo2()
    assert "use_cpp_rvo2=false" in str(info.value)


def test_module_imports_without_smaclite(monkeypatch):
    for name in ("smaclite", "gymnasium", "rvo2"):
        monkeypatch.setitem(sys.modules, name, None)
    module = importlib.reload(smaclite_env)  # smaclite is only imported inside functions
    assert module.EPISODE_LIMITS["2s3z"] == 120 and module.EPISODE_LIMITS["corridor"] == 400


# ----------------------------------------------------------------------------- with SMACLite

@pytest.fixture
def smaclite():
    return pytest.importorskip("smaclite")


def masked_random_policy(generator: torch.Generator, taken: list | None = None):
    """Uniform over each agent's available actions; records (mask, action) pairs in ``taken``."""

    def policy(td):
        mask = td.get(MASK)
        flat = mask.reshape(-1, mask.shape[-1]).float()
        action = torch.multinomial(flat, 1, generator=generator).reshape(mask.shape[:-1])
        if taken is not None:
            taken.append((mask.clone(), action.clone()))
        td.set(ACTION, action)
        return td

    return policy


def stop_policy(td):
    """Every live agent stops (action 1); dead agents no-op (action 0): nobody moves."""
    mask = td.get(MASK)
    td.set(ACTION, torch.where(mask[..., 1], 1, 0).long())
    return td


@pytest.mark.parametrize("map_name,n_agents,n_actions", [("2s3z", 5, 11), ("3s5z", 8, 14), ("MMM2", 10, 18)])
def test_shapes(smaclite, map_name, n_agents, n_actions):
    env = game(map_name, seed=0)
    assert (env.n_agents, env.n_actions) == (n_agents, n_actions)
    assert env.episode_limit == smaclite_env.EPISODE_LIMITS[map_name]
    assert env.stat_keys == ("battle_won",)
    td = env.reset()
    assert td.get(OBS).shape == (n_agents, env.obs_dim) and td.get(OBS).dtype == torch.float32
    assert td.get(MASK).shape == (n_agents, n_actions) and td.get(MASK).dtype == torch.bool
    assert td.get("state").shape == (env.state_dim,)
    assert td.get("battle_won").shape == (1,) and td.get("battle_won").item() == 0.0
    rollout = env.rollout(3, masked_random_policy(torch.Generator().manual_seed(0)))
    assert rollout.batch_size == (3,)
    assert rollout.get(("next", "reward")).shape == (3, 1)
    assert rollout.get(("next", "battle_won")).shape == (3, 1)
    for key in ("done", "terminated", "truncated"):
        assert rollout.get(("next", key)).shape == (3, 1) and rollout.get(("next", key)).dtype == torch.bool
    check_env_specs(env)  # specs match the data (random actions drawn within the action mask)
    env.close()


def test_masked_random_episodes_respect_masks(smaclite):
    env = game("2s3z", seed=1)
    taken = []
    for _ in range(2):  # whole episodes (random play ends by elimination well before 120 steps)
        rollout = env.rollout(env.episode_limit, masked_random_policy(torch.Generator().manual_seed(1), taken),
                              break_when_any_done=True)
        assert rollout.get(("next", "done"))[-1].item()
        assert not rollout.get(("next", "done"))[:-1].any()
        # returns are normalized as SMAC's: at most 20 (a loss returns much less)
        assert 0.0 <= rollout.get(("next", "reward")).sum().item() <= 20.0
    for mask, action in taken:
        assert mask.gather(-1, action.unsqueeze(-1)).all(), "an unavailable action was taken"
    # dead agents may only no-op
    dead = [mask for mask, _ in taken if (~mask[:, 1:]).all(-1).any()]
    for mask in dead:
        rows = (~mask[:, 1:]).all(-1)
        assert mask[rows, 0].all()
    env.close()


def test_win_flag_propagated(smaclite):
    env = game("2s3z", seed=0)
    td = env.reset()
    battle = env._game
    max_reward = battle.max_reward
    for enemy in battle.enemies.values():  # wipe out the enemy team: the next step is a win
        enemy.hp = 0
    td = env.step(stop_policy(td))
    nxt = td.get("next")
    assert nxt.get("battle_won").item() == 1.0
    assert nxt.get("terminated").item() and nxt.get("done").item() and not nxt.get("truncated").item()
    # the win bonus (200) in SMAC's normalization: 200 / (max_reward / 20)
    assert nxt.get("reward").item() == pytest.approx(200 / (max_reward / 20), rel=1e-5)
    with pytest.raises(RuntimeError, match="finished"):
        env.step(stop_policy(nxt.clone()))
    td = env.reset()
    assert td.get("battle_won").item() == 0.0
    env.close()


def test_time_limit_is_truncation(smaclite):
    env = game("2s3z", seed=0, episode_limit=5)
    assert env.episode_limit == 5
    rollout = env.rollout(10, stop_policy, break_when_any_done=True)
    assert rollout.batch_size == (5,)
    nxt = rollout.get("next")
    assert nxt.get("truncated").squeeze(-1).tolist() == [False] * 4 + [True]
    assert not nxt.get("terminated").any()
    assert nxt.get("done").squeeze(-1).tolist() == [False] * 4 + [True]
    assert (nxt.get("battle_won") == 0).all()
    env.close()


def test_parallel_equals_serial(smaclite):
    """Two games (seeds 0, 1) in worker processes and in this process, same masked random actions:
    identical rollouts. The games end at different steps, so the longer one is stepped alone
    (partial steps); a finished game is never stepped again (the env would raise)."""
    rollouts, lengths = [], []
    for parallel in (False, True):
        env = make_smaclite(num_envs=2, seed=0, map="2s3z", workers="processes" if parallel else "in_process", start_method="fork")
        assert isinstance(env, ParallelEnv if parallel else SerialEnv)
        assert (env.n_agents, env.n_actions, env.episode_limit, env.stat_keys) == (5, 11, 120, ("battle_won",))
        rollout = env.rollout(env.episode_limit, masked_random_policy(torch.Generator().manual_seed(7)),
                              auto_reset=True, break_when_any_done=False, break_when_all_done=True)
        env.close()
        done = rollout.get(("next", "done")).squeeze(-1)
        lengths.append((done.long().cumsum(1) == 0).sum(1) + 1)
        rollouts.append(rollout)
    serial, parallel = rollouts
    assert serial.batch_size == parallel.batch_size
    assert lengths[0].tolist() == lengths[1].tolist()
    assert lengths[0][0] != lengths[0][1], "pick seeds whose games end at different steps"
    for key in (OBS, MASK, ACTION, "state", ("next", "reward"), ("next", "done"), ("next", "terminated"),
                ("next", "truncated"), ("next", "battle_won"), ("next",) + OBS):
        assert torch.equal(serial.get(key), parallel.get(key)), key


def test_unknown_map_lists_maps(smaclite):
    for build in (lambda: game("2s3z_typo"), lambda: make_smaclite(map="mmm2")):
        with pytest.raises(ConfigError) as info:
            build()
        message = str(info.value)
        for name in ("2s3z", "MMM2", "corridor", "3s_vs_5z", "bane_vs_bane"):
            assert name in message
    assert len(smaclite_env.map_names()) == 12
    assert set(smaclite_env.map_names()) == set(smaclite_env.EPISODE_LIMITS)


def test_bad_episode_limit(smaclite):
    with pytest.raises(ConfigError, match="env.episode_limit=0 is out of range"):
        game("2s3z", episode_limit=0)


def test_rng_state_round_trip(smaclite):
    """rng_state() / set_rng_state() restore a game's RNG: the same actions replay the same game."""
    env = game("2s3z", seed=0)

    # A whole random episode: in the fights the RNG (units' order within a frame) can matter; with
    # seed 0 and these actions the second episode differs from the first (not so for every seed).
    def play():
        return env.rollout(env.episode_limit, masked_random_policy(torch.Generator().manual_seed(3)),
                           break_when_any_done=True)

    def same(a, b):
        return a.batch_size == b.batch_size and torch.equal(a.get(("next",) + OBS), b.get(("next",) + OBS))

    state = env.rng_state()
    assert state.dtype == torch.uint8
    first = play()
    assert not same(first, play())  # the same actions, another RNG state: another game
    env.set_rng_state(state)
    assert same(first, play())
    env.close()


@pytest.mark.parametrize("parallel", [False, True])
def test_batch_rng_state(smaclite, parallel):
    """A batch gathers its games' RNG states (game i at index i) and gives each its own back, also
    through worker processes (a ParallelEnv forwards unknown names to its workers); close() twice
    is harmless."""
    env = make_smaclite(num_envs=2, seed=5, map="2s3z", workers="processes" if parallel else "in_process", start_method="fork")
    assert hasattr(env, "rng_state") and hasattr(env, "set_rng_state")
    states = env.rng_state()
    assert len(states) == 2 and all(s.dtype == torch.uint8 for s in states)
    assert torch.equal(states[0], game("2s3z", seed=5).rng_state())
    assert not torch.equal(states[0], states[1])  # seeds 5 and 6
    env.set_rng_state([states[1], states[0]])
    swapped = env.rng_state()
    assert torch.equal(swapped[0], states[1]) and torch.equal(swapped[1], states[0])
    env.close()
    env.close()
