import itertools

import pytest
import torch

from lightning_marl.envs import ENVS, make_env
from lightning_marl.envs.contract import ACTION, MASK, OBS
from lightning_marl.errors import ConfigError

HAND_WRITTEN = {
    "non_monotonic": [[8, -12, -12], [-12, 0, 0], [-12, 0, 0]],
    "climbing": [[11, -30, 0], [-30, 7, 6], [0, 0, 5]],
    "penalty": [[10, 0, -100], [0, 2, 0], [-100, 0, 10]],
}


def step_all_joint_actions(env_kwargs, n_agents, n_actions):
    joint = torch.tensor(list(itertools.product(range(n_actions), repeat=n_agents)))
    env = make_env("matrix", num_envs=len(joint), **env_kwargs)
    td = env.reset()
    td.set(ACTION, joint)
    out = env.step(td)["next"]
    return joint, out


@pytest.mark.parametrize("game", sorted(HAND_WRITTEN))
def test_every_joint_action_pays_the_hand_written_payoff(game):
    joint, out = step_all_joint_actions({"game": game}, 2, 3)
    expected = torch.tensor([HAND_WRITTEN[game][a][b] for a, b in joint.tolist()], dtype=torch.float32)
    assert torch.equal(out["reward"].squeeze(-1), expected)
    assert out["terminated"].all() and out["done"].all() and not out["truncated"].any()


def test_penalty_k_is_configurable():
    joint, out = step_all_joint_actions({"game": "penalty", "penalty_k": -7.0}, 2, 3)
    rewards = dict(zip(map(tuple, joint.tolist()), out["reward"].squeeze(-1).tolist()))
    assert rewards[(0, 2)] == rewards[(2, 0)] == -7.0 and rewards[(0, 0)] == 10.0


def test_three_agent_payoff_from_config():
    payoff = torch.arange(8, dtype=torch.float32).view(2, 2, 2).tolist()
    joint, out = step_all_joint_actions({"payoff": payoff, "n_agents": 3}, 3, 2)
    expected = torch.tensor([payoff[a][b][c] for a, b, c in joint.tolist()])
    assert torch.equal(out["reward"].squeeze(-1), expected)
    assert out[OBS].shape == (8, 3, 1) and out[MASK].shape == (8, 3, 2) and out[MASK].all()


def test_contract_shapes_and_dtypes():
    env = make_env("matrix", num_envs=5)
    td = env.reset()
    assert td[OBS].dtype == torch.float32 and td[OBS].shape == (5, 2, 1)
    assert td[MASK].dtype == torch.bool and td["state"].shape == (5, 1)
    assert env.n_agents == 2 and env.n_actions == 3 and env.episode_limit == 1


@pytest.mark.parametrize("payoff, n_agents, fragment", [
    ([[1, 2, 3], [4, 5, 6]], None, "shape (2, 3)"),
    ([[1, 2], [3, 4]], 3, "2 dimensions for env.n_agents=3"),
])
def test_bad_payoff_shape_is_named(payoff, n_agents, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        make_env("matrix", payoff=payoff, n_agents=n_agents)


def test_unknown_game_and_env_list_the_allowed_names():
    with pytest.raises(ConfigError, match="env.game=prisoners .*; allowed: non_monotonic, climbing"):
        make_env("matrix", game="prisoners")
    with pytest.raises(ConfigError, match="env=atari is not an option; allowed: box_pushing.*matrix"):
        ENVS.config("atari")
