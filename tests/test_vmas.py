"""VMAS (env=vmas, TorchRL's VmasEnv) behind the data contract: every registered task's specs and
shapes, the time limit as truncation, a task's own end as termination, finished games that stay
finished, the team reward, seeding, refused tasks and options, training."""
from __future__ import annotations

import pytest
import torch
from torchrl.envs.utils import check_env_specs

import lightning_marl as lm
from lightning_marl.envs.contract import ACTION, MASK, OBS

pytest.importorskip("vmas")
from lightning_marl.envs.vmas import TASKS  # noqa: E402


def random_actions(td):
    mask = td[MASK]
    return td.set(ACTION, torch.multinomial(mask.flatten(0, -2).float(), 1).view(mask.shape[:-1]))


@pytest.mark.parametrize("task", list(TASKS))
def test_contract_of_every_task(task):
    env = lm.make_env("vmas", num_envs=3, task=task, max_steps=6, seed=0)
    check_env_specs(env)
    n, a, o = env.n_agents, env.n_actions, env.obs_dim
    assert n == TASKS[task][1].get("n_agents", n) and a >= 5 and env.state_dim == n * o
    td = env.reset()
    assert td[OBS].shape == (3, n, o) and td[MASK].shape == (3, n, a) and td[MASK].all()
    assert td["state"].shape == (3, n * o) and torch.equal(td["state"], td[OBS].reshape(3, -1))
    roll = env.rollout(6, random_actions, break_when_any_done=False)
    nxt = roll["next"]
    ended = nxt["terminated"].any(1).squeeze(-1)
    assert (nxt["truncated"][:, -1].squeeze(-1) | ended).all()  # the limit, unless the task ended first
    assert not (nxt["truncated"] & nxt["terminated"]).any()
    env.close()


def test_a_finished_game_stays_finished_and_earns_nothing_until_reset():
    env = lm.make_env("vmas", num_envs=2, task="balance", max_steps=3, seed=1)
    env.reset()
    roll = env.rollout(3, random_actions, break_when_any_done=False)
    assert roll["next", "truncated"][:, -1].all()
    td = roll[:, -1]["next"].clone().set("_step", torch.tensor([False, True]))
    td = random_actions(td)
    out = env.step(td)["next"]
    assert out["done"].all() and (out["reward"] == 0).all()
    assert not env.reset()["done"].any()


def test_team_reward_is_the_mean_or_the_sum_of_the_agents_rewards():
    def first_rewards(team_reward):
        env = lm.make_env("vmas", num_envs=2, task="navigation", seed=4, team_reward=team_reward)
        td = env.reset()
        td.set(ACTION, torch.ones(td[MASK].shape[:-1], dtype=torch.long))
        reward = env.step(td)["next", "reward"]
        env.close()
        return reward

    mean, total = first_rewards("mean"), first_rewards("sum")
    assert (mean != 0).any() and torch.allclose(total, 3 * mean)


def test_same_seed_same_games_another_seed_others():
    def starts(seed):
        env = lm.make_env("vmas", num_envs=2, task="navigation", seed=seed)
        out = [env.reset()["state"].clone() for _ in range(2)]
        env.close()
        return out

    a, b, c = starts(5), starts(5), starts(6)
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not torch.equal(a[0], c[0])


def test_scenario_options_reach_vmas_and_bad_ones_are_refused():
    env = lm.make_env("vmas", num_envs=2, task="balance", seed=0, scenario={"n_agents": 2})
    assert env.n_agents == 2
    env.close()
    with pytest.raises(lm.ConfigError, match="env.task=football is out of range; allowed: balance"):
        lm.load_config(["env=vmas", "env.task=football"])
    with pytest.raises(lm.ConfigError, match="env.team_reward=max is out of range; allowed: mean or sum"):
        lm.load_config(["env=vmas", "env.team_reward=max"])


def test_time_outs_bootstrap_unless_stored_as_terminals(tmp_path):
    for terminal in (False, True):
        cfg = lm.load_config(["env=vmas", "env.task=balance", "env.max_steps=8", "mixer=qmix", "total_env_steps=64",
                              "data.num_envs=4", "data.warmup_episodes=4", "data.batch_size=4", "eval.episodes=2",
                              "eval.num_envs=2", "trainer.enable_progress_bar=false",
                              f"env.timeout_as_terminal={str(terminal).lower()}"])
        result = lm.run(cfg, tmp_path / str(terminal))
        assert result["env_steps"] >= 64
        replay = torch.load(tmp_path / str(terminal) / "checkpoints" / "last.ckpt", weights_only=False)
        episodes = replay["MARLDataModule"]["replay"]["episodes"]
        if not terminal:  # balance rarely ends in 8 steps: most stored episodes end by the limit
            assert not episodes["terminated"].all(1).any() and (~episodes["terminated"].any(1)).any()
        else:
            assert episodes["terminated"].any(1).all()
