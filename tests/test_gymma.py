"""The Gymnasium multi-agent family (env=lbf, env=rware) behind the data contract: specs, shapes,
masks, the time limit as truncation, a real terminal, seeding and RNG state, a refused key, training."""
from __future__ import annotations

import importlib.util

import pytest
import torch
from torchrl.envs.utils import check_env_specs

import lightning_marl as lm
from lightning_marl.envs.contract import ACTION, MASK, OBS
from lightning_marl.envs.gymma import GymmaEnv

GAMES = [pytest.param("lbf", "Foraging-8x8-2p-2f-coop-v3", 2, 6, 12, 50,
                      marks=pytest.mark.skipif(importlib.util.find_spec("lbforaging") is None, reason="lbforaging")),
         pytest.param("rware", "rware-tiny-2ag-v2", 2, 5, 71, 500,
                      marks=pytest.mark.skipif(importlib.util.find_spec("rware") is None, reason="rware"))]


def masked_random(td):
    """Uniform over each agent's available actions."""
    mask = td[MASK]
    choice = torch.multinomial(mask.flatten(0, -2).float(), 1).view(mask.shape[:-1])
    return td.set(ACTION, choice)


@pytest.mark.parametrize("name, key, agents, actions, obs_dim, limit", GAMES)
def test_contract_shapes_masks_and_time_limit(name, key, agents, actions, obs_dim, limit):
    env = lm.make_env(name, num_envs=2, key=key, seed=3)
    try:
        check_env_specs(env)
        assert (env.n_agents, env.n_actions, env.obs_dim, env.state_dim, env.episode_limit) == \
            (agents, actions, obs_dim, agents * obs_dim, limit)
        td = env.reset()
        assert td[OBS].shape == (2, agents, obs_dim) and td[MASK].shape == (2, agents, actions)
        assert torch.equal(td["state"], td[OBS].flatten(1))  # the state: the observations joined
        roll = env.rollout(limit, masked_random, break_when_any_done=False)  # one whole episode
        taken = roll[ACTION].unsqueeze(-1)
        assert roll[MASK].gather(-1, taken).all()  # every action taken was available
        nxt = roll["next"]
        assert nxt["truncated"][:, -1].all() and not nxt["terminated"].any()  # the time limit bootstraps
        assert not nxt["done"][:, :-1].any()
    finally:
        env.close()


@pytest.mark.parametrize("name, key, agents, actions, obs_dim, limit", GAMES[:1])
def test_lbf_masks_and_a_real_terminal(name, key, agents, actions, obs_dim, limit):
    game = GymmaEnv("lbf", key, 0, "cpu", 0, True)
    td = game.reset()
    assert not td[MASK].all() and td[MASK][:, 0].all()  # moving into walls or food is not offered; NONE is
    game._game.field[:] = 0  # every food item collected: the game ends on its own
    nxt = game.step(td.set(ACTION, torch.zeros(agents, dtype=torch.long)))["next"]
    assert nxt["terminated"].item() and nxt["done"].item() and not nxt["truncated"].item()
    game.close()


@pytest.mark.parametrize("name, key, agents, actions, obs_dim, limit", GAMES[:1])
def test_lbf_without_valid_action_masks_offers_every_action_and_an_invalid_one_does_nothing(
        name, key, agents, actions, obs_dim, limit):
    """EPyMARL's gymma wrapper offers every action (its LBF preset does the same): an action LBF does not
    allow plays as NONE."""
    masked = lm.make_env(name, num_envs=2, key=key, seed=4, workers="in_process")
    unmasked = lm.make_env(name, num_envs=2, key=key, seed=4, workers="in_process", valid_actions=False)
    try:
        td, free = masked.reset(), unmasked.reset()
        assert free[MASK].all() and not td[MASK].all() and torch.equal(td[OBS], free[OBS])
        invalid = (~td[MASK]).float().argmax(-1)  # per player an action LBF does not allow now
        assert not td[MASK].gather(-1, invalid.unsqueeze(-1)).any()
        after_none = masked.step(td.set(ACTION, torch.zeros_like(invalid)))["next"]
        after_invalid = unmasked.step(free.set(ACTION, invalid))["next"]
        assert torch.equal(after_none[OBS], after_invalid[OBS])
        assert torch.equal(after_none["reward"], after_invalid["reward"])
    finally:
        masked.close()
        unmasked.close()
    assert lm.load_config(["experiment=epymarl/lbf"]).env.valid_actions is False
    assert lm.load_config(["env=lbf"]).env.valid_actions is True


@pytest.mark.parametrize("name, key, agents, actions, obs_dim, limit", GAMES)
def test_seeding_and_rng_state(name, key, agents, actions, obs_dim, limit):
    def starts(seed):
        env = lm.make_env(name, num_envs=2, key=key, seed=seed, workers="in_process")
        first = [env.reset()[OBS].clone() for _ in range(3)]
        env.close()
        return first

    a, b, c = starts(5), starts(5), starts(6)
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not all(torch.equal(x, y) for x, y in zip(a, c))
    one, two = GymmaEnv(name, key, 1, "cpu", 0, True), GymmaEnv(name, key, 99, "cpu", 0, True)
    one.reset()
    two.reset()
    two.set_rng_state(one.rng_state())  # a resumed game continues the saved one's starts
    assert torch.equal(one.reset()[OBS], two.reset()[OBS])
    one.close()
    two.close()


def test_an_unknown_key_is_refused_with_registered_ones():
    pytest.importorskip("lbforaging")
    from lightning_marl.cli import preflight

    with pytest.raises(lm.ConfigError, match=r"env.key=Foraging-8x8-2p-2f-coop-v9 is not a registered lbf game; "
                                             r"allowed: one of the \d+ keys lbforaging registers, e.g. Foraging-8x8"):
        preflight(["env=lbf", "env.key=Foraging-8x8-2p-2f-coop-v9"])


def test_a_short_training_run_on_lbf(tmp_path):
    pytest.importorskip("lbforaging")
    cfg = lm.load_config(["env=lbf", "mixer=qmix", "total_env_steps=800", "data.num_envs=2",
                          "data.env_workers=in_process", "data.warmup_episodes=4", "data.batch_size=4",
                          "eval.episodes=2", "eval.num_envs=2", "trainer.enable_progress_bar=false"])
    result = lm.run(cfg, tmp_path)
    assert result["env_steps"] >= 800 and 0.0 <= result["final"]["test/return_mean"] <= 1.0
