"""Prioritized replay of episodes: the draw follows the priorities, the importance weights and the
loss use them, training writes the episodes' TD errors back, and a resumed run continues exactly."""
import pandas as pd
import pytest
import torch
from tensordict import TensorDict
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

from lightning_marl.config import load
from lightning_marl.data.collector import collect_episodes
from lightning_marl.data.priority import WEIGHT_KEY, EpisodePrioritySampler
from lightning_marl.experiment import build_datamodule, build_module, run
from lightning_marl.models.policy import RecurrentPolicy
from tests.test_resume import BASE, assert_same_training_state, final_state


def replay_of(n_episodes: int, alpha: float, beta: float, batch_size: int = 4000) -> TensorDictReplayBuffer:
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(10), batch_size=batch_size,
                                sampler=EpisodePrioritySampler(10, alpha=alpha, beta=beta))
    rb.extend(TensorDict({"x": torch.arange(n_episodes).float().unsqueeze(-1).expand(n_episodes, 3)},
                         batch_size=[n_episodes, 3]))
    return rb


def test_draws_follow_priority_to_the_alpha_and_weights_correct_them():
    torch.manual_seed(0)
    rb = replay_of(4, alpha=0.5, beta=1.0)
    rb.update_priority(torch.tensor([0, 1, 2, 3]), torch.tensor([1.0, 4.0, 9.0, 16.0]))
    batch = rb.sample()
    assert batch.batch_size == (4000, 3) and batch["index"].shape == (4000, 3)  # per-episode info, expanded
    index = batch["index"][:, 0]
    freq = torch.bincount(index, minlength=4).float() / len(index)
    expected = torch.tensor([1.0, 2.0, 3.0, 4.0]) / 10  # sqrt of the priorities, normalised
    assert torch.allclose(freq, expected, atol=0.03)
    # w = (P_i / P_min)^-beta: the least likely episode weighs 1, the others P_min / P_i
    weight = batch[WEIGHT_KEY][:, 0]
    assert torch.allclose(weight, (1.0 / torch.tensor([1.0, 2.0, 3.0, 4.0]))[index], atol=1e-5)


def test_alpha_zero_is_uniform_and_new_episodes_get_the_largest_priority():
    torch.manual_seed(1)
    rb = replay_of(2, alpha=0.0, beta=0.4)
    rb.update_priority(torch.tensor([0, 1]), torch.tensor([0.5, 50.0]))
    freq = torch.bincount(rb.sample()["index"][:, 0], minlength=2).float() / 4000
    assert torch.allclose(freq, torch.tensor([0.5, 0.5]), atol=0.03)
    rb.extend(TensorDict({"x": torch.zeros(1, 3)}, batch_size=[1, 3]))
    assert rb.sampler.priority[2] == pytest.approx(50.0 + 1e-6)


def test_importance_weights_scale_the_td_loss(make_config):
    cfg = load(["env=matrix", "data.prioritized=true", "data.batch_size=8", "data.warmup_episodes=8"])
    dm = build_datamodule(cfg)
    dm.setup()
    module = build_module(cfg, dm.env_info())
    episodes, _ = collect_episodes(dm.collection.env, RecurrentPolicy(module.agent, 1.0, module.device), 1)
    dm.replay.extend(episodes)
    batch = dm.sample()
    assert WEIGHT_KEY in batch.keys()
    plain = batch.exclude(WEIGHT_KEY)
    half = plain.clone().set(WEIGHT_KEY, torch.full(plain.batch_size, 0.5))
    loss_plain, stats = module.td_loss(plain)
    loss_half, _ = module.td_loss(half)
    assert loss_half.item() == pytest.approx(0.5 * loss_plain.item(), rel=1e-6)
    # the new priority of each sampled one-step episode is its |TD error|
    assert stats["episode_priority"].shape == (8,) and (stats["episode_priority"] > 0).all()


def test_training_writes_td_errors_back_and_resumes_exactly(make_config, tmp_path):
    overrides = BASE + ["data.prioritized=true", "data.priority_beta_anneal_steps=1600"]
    full, half = tmp_path / "full", tmp_path / "half"
    run(load(overrides + ["total_env_steps=1600"]), full)
    run(load(overrides + ["total_env_steps=800"]), half)
    run(load(overrides + ["total_env_steps=1600"]), half, ckpt_path=half / "checkpoints" / "last.ckpt")
    a, b = final_state(full), final_state(half)
    assert_same_training_state(a, b)
    sampler = a["MARLDataModule"]["replay"]["sampler"]
    assert torch.equal(sampler["priority"], b["MARLDataModule"]["replay"]["sampler"]["priority"])
    stored = a["MARLDataModule"]["episodes"]
    priority = sampler["priority"][:min(stored, len(sampler["priority"]))]
    # every stored episode has a priority; replayed ones carry their TD error, not the insertion value
    assert (priority > 0).all() and len(torch.unique(priority)) > len(priority) // 2
    assert sampler["beta"] == pytest.approx(0.4 + 0.6 * min(1.0, a["MARLDataModule"]["env_steps"] / 1600))
    assert len(pd.read_csv(full / "metrics.csv").dropna(subset=["loss"])) > 0
