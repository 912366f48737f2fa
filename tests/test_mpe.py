"""The particle environments (env=mpe, mpe2 through PettingZoo's parallel API) behind the data
contract: padded observations, per-agent action counts as masks, the env's state, the time limit as
truncation, seeding and RNG state, a refused task, training."""
from __future__ import annotations

import pytest
import torch
from torchrl.envs.utils import check_env_specs

import lightning_marl as lm
from lightning_marl.envs.contract import ACTION, MASK, OBS

pytest.importorskip("mpe2")
from lightning_marl.envs.mpe import MPEEnv  # noqa: E402


def masked_random(td):
    mask = td[MASK]
    return td.set(ACTION, torch.multinomial(mask.flatten(0, -2).float(), 1).view(mask.shape[:-1]))


@pytest.mark.parametrize("task, agents, actions, obs_dim, state_dim, available", [
    ("simple_spread", 3, 5, 18, 54, [5, 5, 5]),
    ("simple_reference", 2, 50, 21, 42, [50, 50]),
    ("simple_speaker_listener", 2, 5, 11, 14, [3, 5]),  # the speaker has 3 actions and sees 3 values
])
def test_contract(task, agents, actions, obs_dim, state_dim, available):
    check_env_specs(MPEEnv(task, 25, 0, "cpu"))
    env = lm.make_env("mpe", num_envs=2, task=task, seed=3, workers="in_process")
    assert (env.n_agents, env.n_actions, env.obs_dim, env.state_dim, env.episode_limit) == \
        (agents, actions, obs_dim, state_dim, 25)
    td = env.reset()
    assert td[MASK].sum(-1)[0].tolist() == available and td[OBS].shape == (2, agents, obs_dim)
    roll = env.rollout(25, masked_random, break_when_any_done=False)
    nxt = roll["next"]
    assert nxt["truncated"][:, -1].all() and not nxt["terminated"].any() and not nxt["done"][:, :-1].any()
    assert (roll["next", "reward"] != 0).any()
    env.close()


def test_seeding_and_rng_state():
    def starts(seed):
        env = lm.make_env("mpe", num_envs=2, seed=seed, workers="in_process")
        first = [env.reset()["state"].clone() for _ in range(3)]
        env.close()
        return first

    a, b, c = starts(5), starts(5), starts(6)
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not all(torch.equal(x, y) for x, y in zip(a, c))
    one, two = MPEEnv("simple_spread", 25, 1, "cpu"), MPEEnv("simple_spread", 25, 99, "cpu")
    one.reset()
    two.reset()
    two.set_rng_state(one.rng_state())
    assert torch.equal(one.reset()["state"], two.reset()["state"])


def test_an_unknown_task_is_refused_with_the_tasks():
    with pytest.raises(lm.ConfigError, match="env.task=simple_tag is out of range; allowed: simple_spread, "
                                             "simple_reference or simple_speaker_listener"):
        lm.load_config(["env=mpe", "env.task=simple_tag"])


def test_a_short_training_run(tmp_path):
    cfg = lm.load_config(["env=mpe", "env.task=simple_speaker_listener", "mixer=qmix", "total_env_steps=400",
                          "data.num_envs=2", "data.env_workers=in_process", "data.warmup_episodes=4",
                          "data.batch_size=4", "eval.episodes=2", "eval.num_envs=2", "trainer.enable_progress_bar=false"])
    result = lm.run(cfg, tmp_path)
    assert result["env_steps"] >= 400 and result["final"]["test/return_mean"] < 0  # distances: negative rewards
