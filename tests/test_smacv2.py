"""SMACv2: the install errors (package / StarCraft II / map missing) and the key mapping to the
contract, checked against a stand-in ``smacv2`` package (no game needed). A real-game smoke test
runs only where smacv2 and StarCraft II are installed."""
from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import os
import sys
import types

import numpy as np
import pytest
import torch
import torchrl.envs.libs.smacv2 as torchrl_smacv2
from torchrl.envs import SerialEnv

from lightning_marl import envs
from lightning_marl.envs import smacv2 as smacv2_env
from lightning_marl.envs.contract import ACTION, MASK, OBS
from lightning_marl.errors import ConfigError

make_smacv2 = functools.partial(envs.make_env, "smacv2")

MAPS = {"3m": {"limit": 60, "map_name": "3m"}, "10gen_protoss": {"limit": 200, "map_name": "32x32_flat"},
        "10gen_terran": {"limit": 200, "map_name": "32x32_flat"}}


class FakeStarCraft2Env:
    """Stand-in for smacv2's StarCraft2Env: obs/state = the step count; time limit 4 steps; on map
    "3m" the battle is won at step 2. Records its constructor arguments."""

    created: list = []

    def __init__(self, map_name="8m", seed=None, continuing_episode=False, capability_config=None, **kwargs):
        self.map_name, self.seed, self.continuing_episode = map_name, seed, continuing_episode
        self.capability_config, self.kwargs = capability_config, kwargs
        self.n_agents = capability_config["n_units"] if capability_config else 3
        self.n_enemies = capability_config["n_enemies"] if capability_config else 3
        self.n_actions = 6 + self.n_enemies
        self.episode_limit = 4
        self.t = 0
        self.taken = []
        FakeStarCraft2Env.created.append(self)

    def reset(self, *args):
        self.t = 0
        return self.get_obs(), self.get_state()

    def get_obs(self):
        return [np.full(5, self.t + i, dtype=np.float32) for i in range(self.n_agents)]

    def get_state(self):
        return np.full(9, self.t, dtype=np.float32)

    def get_obs_size(self):
        return 5

    def get_state_size(self):
        return 9

    def get_avail_actions(self):
        mask = [[0] + [1] * (self.n_actions - 1) for _ in range(self.n_agents)]
        mask[0][-1] = 0  # agent 0 may not attack the last enemy
        return mask

    def step(self, actions):
        assert all(type(a) is int for a in actions)
        self.taken.append(list(actions))
        self.t += 1
        info = {"battle_won": False, "dead_allies": 0, "dead_enemies": 0}
        terminated = False
        if self.map_name == "3m" and self.t >= 2:
            terminated, info["battle_won"] = True, True
        elif self.t >= self.episode_limit:
            terminated = True
            if self.continuing_episode:
                info["episode_limit"] = True
        return 1.5, terminated, info

    def close(self):
        pass


class FakeCapabilityWrapper(FakeStarCraft2Env):
    pass


@pytest.fixture
def fake_smacv2(monkeypatch):
    """A stand-in ``smacv2`` package in sys.modules (and TorchRL told it is installed)."""
    names = ["smacv2", "smacv2.env", "smacv2.env.starcraft2", "smacv2.env.starcraft2.maps",
             "smacv2.env.starcraft2.maps.smac_maps"]
    modules = {}
    for name in names:
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        module.__path__ = []
        modules[name] = module
        monkeypatch.setitem(sys.modules, name, module)
    for parent, child in zip(names, names[1:]):
        setattr(modules[parent], child.rsplit(".", 1)[1], modules[child])
    modules["smacv2.env"].StarCraft2Env = FakeStarCraft2Env
    modules["smacv2.env"].StarCraftCapabilityEnvWrapper = FakeCapabilityWrapper
    modules["smacv2.env.starcraft2.maps.smac_maps"].get_smac_map_registry = lambda: MAPS
    monkeypatch.setattr(torchrl_smacv2, "_has_smacv2", True)
    FakeStarCraft2Env.created = []
    return modules


@pytest.fixture
def fake_game(tmp_path, monkeypatch):
    """An SC2PATH with a Versions folder and the map files the stand-in registry names."""
    (tmp_path / "Versions").mkdir()
    (tmp_path / "Maps" / "SMAC_Maps").mkdir(parents=True)
    for params in MAPS.values():
        (tmp_path / "Maps" / "SMAC_Maps" / f"{params['map_name']}.SC2Map").write_bytes(b"")
    monkeypatch.setenv("SC2PATH", str(tmp_path))
    return tmp_path


# ----------------------------------------------------------------------------- install errors

def test_missing_package_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "smacv2", None)  # find_spec -> None, import -> ImportError
    with pytest.raises(ImportError) as info:
        make_smacv2(num_envs=2)
    message = str(info.value)
    for text in ("pip install git+https://github.com/oxwhirl/smacv2.git", "SC2PATH", "SC2.4.10.zip",
                 "SMAC_Maps.zip", "env=smaclite"):
        assert text in message


def test_missing_game_message(fake_smacv2, tmp_path, monkeypatch):
    monkeypatch.setenv("SC2PATH", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError) as info:
        make_smacv2(map="10gen_protoss")
    message = str(info.value)
    assert "StarCraft II was not found" in message and str(tmp_path / "nowhere") in message
    assert "SC2.4.10.zip" in message and "export SC2PATH" in message
    assert FakeStarCraft2Env.created == []  # nothing was launched


def test_missing_map_message(fake_smacv2, tmp_path, monkeypatch):
    (tmp_path / "Versions").mkdir()
    monkeypatch.setenv("SC2PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        make_smacv2(map="10gen_protoss")
    assert "32x32_flat.SC2Map" in str(info.value) and "SMAC_Maps.zip" in str(info.value)


def test_unknown_map_lists_maps(fake_smacv2, fake_game):
    with pytest.raises(ConfigError) as info:
        make_smacv2(map="10gen_protos")
    assert "10gen_protoss" in str(info.value) and "3m" in str(info.value)
    with pytest.raises(ConfigError, match="capability_config"):
        make_smacv2(map="3m", capability_config={"n_units": 3})


# ----------------------------------------------------------------------------- key mapping

def test_contract_outcome():
    assert smacv2_env.contract_outcome(False, {"battle_won": False}) == (False, False, 0.0)
    assert smacv2_env.contract_outcome(True, {"battle_won": True}) == (True, False, 1.0)
    assert smacv2_env.contract_outcome(True, {"battle_won": False}) == (True, False, 0.0)  # lost
    assert smacv2_env.contract_outcome(True, {"battle_won": False, "episode_limit": True}) == (False, True, 0.0)


def first_available(td):
    mask = td.get(MASK)
    td.set(ACTION, mask.float().argmax(-1))
    return td


def test_generated_map_keys_and_truncation(fake_smacv2, fake_game):
    env = make_smacv2(num_envs=2, seed=3, map="10gen_protoss", n_units=5, n_enemies=6, workers="in_process")
    assert isinstance(env, SerialEnv) and hasattr(env, "rng_state")
    assert (env.n_agents, env.n_actions, env.episode_limit, env.stat_keys) == (5, 12, 4, ("battle_won",))
    assert (env.obs_dim, env.state_dim) == (5, 9)
    game = FakeStarCraft2Env.created[0]  # the probe: the arguments smacv2 receives
    assert isinstance(game, FakeCapabilityWrapper)
    assert game.continuing_episode is True and game.seed == 3
    assert game.kwargs["obs_own_pos"] and game.kwargs["use_unit_ranges"]
    team = game.capability_config["team_gen"]
    assert team["unit_types"] == ["stalker", "zealot", "colossus"] and team["dist_type"] == "weighted_teams"
    assert game.capability_config["start_positions"]["n_enemies"] == 6

    td = env.reset()
    assert td.get(OBS).shape == (2, 5, 5) and td.get(OBS).dtype == torch.float32
    assert td.get(MASK).shape == (2, 5, 12) and td.get(MASK).dtype == torch.bool
    assert not td.get(MASK)[:, 0, -1].any() and td.get(MASK)[:, 1, -1].all()
    assert td.get("state").shape == (2, 9)
    assert td.get("battle_won").shape == (2, 1) and (td.get("battle_won") == 0).all()
    assert "info" not in td.keys()

    rollout = env.rollout(10, first_available, break_when_any_done=False, break_when_all_done=True)
    assert rollout.batch_size == (2, 4)
    nxt = rollout.get("next")
    assert torch.equal(nxt.get("reward"), torch.full((2, 4, 1), 1.5))
    assert nxt.get("truncated").squeeze(-1).tolist() == [[False, False, False, True]] * 2
    assert not nxt.get("terminated").any()  # a time-out is not a terminal
    assert nxt.get("done").squeeze(-1).tolist() == [[False, False, False, True]] * 2
    assert (nxt.get("battle_won") == 0).all()
    assert torch.equal(nxt.get(OBS)[0, :, 0, 0], torch.tensor([1.0, 2.0, 3.0, 4.0]))
    games = [g for g in FakeStarCraft2Env.created if g.taken]
    assert [g.seed for g in games] == [3, 4]  # seed + i per game
    assert games[0].taken[0] == [1] * 5
    env.close()
    env.close()  # harmless


def test_v1_map_win(fake_smacv2, fake_game):
    env = make_smacv2(num_envs=1, map="3m")
    game = FakeStarCraft2Env.created[0]
    assert not isinstance(game, FakeCapabilityWrapper) and game.capability_config is None
    assert "obs_own_pos" not in game.kwargs
    rollout = env.rollout(10, first_available, break_when_any_done=True)
    nxt = rollout.get("next")
    assert rollout.batch_size == (1, 2)
    assert nxt.get("terminated").squeeze(-1).tolist() == [[False, True]]
    assert not nxt.get("truncated").any()
    assert nxt.get("battle_won").squeeze(-1).tolist() == [[0.0, 1.0]]
    env.close()


# ----------------------------------------------------------------------------- the real game

def test_real_game_smoke():
    if importlib.util.find_spec("smacv2") is None:
        pytest.skip("smacv2 is not installed")
    if not os.path.isdir(os.path.join(smacv2_env.sc2_path(), "Versions")):
        pytest.skip("StarCraft II is not installed (SC2PATH)")
    env = make_smacv2(num_envs=1, map="3m")
    rollout = env.rollout(3, first_available)
    assert rollout.get(OBS).shape[-2] == env.n_agents == 3
    assert rollout.get(("next", "battle_won")).shape[-1] == 1
    env.close()
