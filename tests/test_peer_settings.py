"""The settings the peers' presets need: EPyMARL's reward standardisation, feed-forward agents (also in
tests/test_masking.py), epsilon in the test episodes and over the replay warm-up, BenchMARL's updates per
env steps, and evaluations after a round's updates."""
import torch

import lightning_marl as lm
from lightning_marl.config.schema import AgentConfig
from lightning_marl.data.datamodule import MARLDataModule
from lightning_marl.data.evaluator import GreedyEvaluator
from lightning_marl.models.agent import RNNAgent
from lightning_marl.models.reward_standardizer import RewardStandardizer
from lightning_marl.module import MARLModule


def test_running_moments_are_those_of_every_reward_seen():
    torch.manual_seed(0)
    batches = [torch.randn(4, 7) * 3 + 2, torch.randn(6, 5) - 1, torch.randn(2, 9) * 0.5]
    norm = RewardStandardizer(initial_count=1e-12)  # (EPyMARL's 1e-4 prior weighs as 1e-4 of a sample)
    for b in batches:
        norm.update(b)
    everything = torch.cat([b.flatten() for b in batches])
    assert torch.allclose(norm.mean, everything.mean(), atol=1e-5)
    # the law of total variance over the batches, with each batch's unbiased variance (as EPyMARL merges them)
    mu, total = everything.mean(), everything.numel()
    within = sum(b.numel() * b.var() for b in batches)
    between = sum(b.numel() * (b.mean() - mu) ** 2 for b in batches)
    assert torch.allclose(norm.var, (within + between) / total, rtol=1e-5)
    assert float(norm.count) == everything.numel() + 1e-12
    r = torch.tensor([1.0, 2.0])
    assert torch.allclose(norm(r), (r - norm.mean) / norm.var.sqrt())


def test_standardised_targets_are_used_and_the_moments_are_checkpointed(tmp_path):
    cfg = lm.load_config(["env=matrix", "env.game=climbing", "mixer=vdn", "learner.standardise_rewards=true",
                          "total_env_steps=256", "data.num_envs=16", "data.batch_size=16", "data.warmup_episodes=16",
                          "eval.episodes=8", "eval.num_envs=8", "trainer.enable_progress_bar=false"])
    lm.run(cfg, tmp_path)
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    updates = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
    # one-step games: each update standardises 16 rewards (every game ends after one step)
    assert float(state["reward_standardizer.count"]) == updates * 16 + 1e-4
    assert float(state["reward_standardizer.mean"]) < 0  # climbing's payoffs are mostly negative


def test_eval_epsilon_explores_in_the_test_episodes():
    env = lm.make_env("matrix", num_envs=64, game="additive", seed=0)
    obs_dim = env.observation_spec["agents", "observation"].shape[-1]
    agent = RNNAgent.from_config(AgentConfig(), obs_dim, 2, 3)
    greedy = GreedyEvaluator(env, 1, 0.0).evaluate(agent, 256)["return"]
    randomised = GreedyEvaluator(env, 1, 1.0).evaluate(agent, 2048)["return"]
    assert greedy in (0, 1, 2, 3, 4, 5)  # one joint action, always the same: its payoff
    assert abs(randomised - 21 / 9) < 0.2  # the mean payoff of uniformly random joint actions


FAST = ["env=matrix", "env.game=climbing", "mixer=vdn", "data.num_envs=16", "data.batch_size=16",
        "eval.episodes=8", "eval.num_envs=8", "trainer.enable_progress_bar=false"]


def test_epsilon_anneals_over_the_replay_warm_up_as_over_training(tmp_path, monkeypatch):
    """EPyMARL anneals epsilon with every env step from the start; the warm-up's rounds (no update
    between them) follow the same schedule here, not epsilon_start until the first update."""
    seen = []
    acting_policy = MARLModule.acting_policy
    monkeypatch.setattr(MARLModule, "acting_policy", lambda self: seen.append(self.epsilon) or acting_policy(self))
    lm.run(lm.load_config(FAST + ["total_env_steps=96", "data.warmup_episodes=64", "learner.epsilon_start=1.0",
                                  "learner.epsilon_finish=0.0", "learner.epsilon_anneal_steps=64"]), tmp_path)
    assert seen == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]  # one-step games: rounds of 16 env steps


def test_updates_per_env_steps_carry_the_remainder_over_rounds():
    dm = MARLDataModule(lm.load_config(FAST + ["data.updates_per_round=1000", "data.round_env_steps=6000"]))
    assert [dm.round_updates(s) for s in (6000, 3300, 5999, 1, 2)] == [1000, 550, 999, 1, 0]
    assert dm.update_credit == 2000  # 2 steps x 1000: a third of the 6000 the next update needs
    assert MARLDataModule(lm.load_config(FAST + ["data.updates_per_round=4"])).round_updates(3) == 4


def test_evaluations_come_after_the_rounds_updates_and_at_the_end(tmp_path):
    lm.run(lm.load_config(FAST + ["total_env_steps=128", "data.warmup_episodes=16", "data.updates_per_round=4",
                                  "eval.interval_env_steps=32"]), tmp_path)
    import pandas as pd

    tests = pd.read_csv(tmp_path / "metrics.csv").dropna(subset=["test/return_mean"])
    updates = tests["step"].astype(int).tolist()
    # 8 rounds of 16 env steps, 4 updates each from the first: evaluations at the start, then after the last
    # update (index 4k - 1) of the rounds ending at 32, 64, 96 and 128 env steps (the last one is the final)
    assert updates == [0, 7, 15, 23, 31] and tests["env_steps"].astype(int).tolist() == [0, 32, 64, 96, 128]


def test_a_run_that_ends_in_the_warm_up_is_still_evaluated_at_its_end(tmp_path):
    lm.run(lm.load_config(FAST + ["total_env_steps=48", "data.warmup_episodes=64"]), tmp_path)
    import pandas as pd

    tests = pd.read_csv(tmp_path / "metrics.csv").dropna(subset=["test/return_mean"])
    assert tests["env_steps"].astype(int).tolist() == [0, 48]  # no update, but its curve reaches its budget
