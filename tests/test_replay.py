import torch

from lightning_marl.config.schema import AgentConfig
from lightning_marl.data.collector import collect_episodes
from lightning_marl.models.agent import RNNAgent
from lightning_marl.models.policy import RecurrentPolicy
from tests.conftest import CountdownEnv


def collect(lengths, limit, epsilon=1.0):
    torch.manual_seed(0)
    env = CountdownEnv(lengths, limit)
    agent = RNNAgent.from_config(AgentConfig(), 1, 2, 3)
    return collect_episodes(env, RecurrentPolicy(agent, epsilon, torch.device("cpu")), limit)


def test_episodes_are_padded_to_the_limit_with_a_validity_mask():
    episodes, stats = collect([2, 5, 3], limit=5)
    assert episodes.batch_size == (3, 6)
    assert episodes["filled"].sum(1).tolist() == [2, 5, 3]
    assert episodes["filled"][0].tolist() == [True, True, False, False, False, False]
    assert stats["length"].tolist() == [2, 5, 3] and stats["return"].tolist() == [2, 5, 3]
    assert episodes["reward"].sum(1).tolist() == [2, 5, 3]  # no reward in the padding


def test_observation_sequence_ends_with_the_final_observation_then_zeros():
    episodes, _ = collect([2, 4], limit=4)
    # obs = steps left: 2,1,0 for game 0 (the final observation at index len), then padding zeros
    assert episodes["obs"][0, :, 0, 0].tolist() == [2, 1, 0, 0, 0]
    assert episodes["obs"][1, :, 0, 0].tolist() == [4, 3, 2, 1, 0]
    assert episodes["state"][0, :3, 1].tolist() == [0, 1, 2]


def test_truncation_is_not_termination():
    episodes, _ = collect([2, 9], limit=4)  # game 1 runs into the time limit
    assert episodes["terminated"][0].tolist() == [False, True, False, False, False]
    assert not episodes["terminated"][1].any()
    assert episodes["filled"][1].sum() == 4


def test_padding_makes_every_action_available_and_keeps_real_masks():
    episodes, _ = collect([1, 3], limit=3)
    avail = episodes["avail"]
    assert not avail[0, 0, 1, 2] and not avail[0, 1, 1, 2]  # real steps keep the env's mask
    assert avail[0, 2:].all()                               # padding: all available
    assert not avail[..., 1, 2][episodes["filled"]].any()


def test_episode_statistics_are_read_at_the_last_step():
    _, stats = collect([2, 5, 3], limit=5)
    assert stats["steps_seen"].tolist() == [2, 5, 3]


def test_replay_sampling_trims_to_the_longest_episode(make_config):
    from lightning_marl.config import validate
    from lightning_marl.data.datamodule import MARLDataModule
    from lightning_marl.data.replay import EpisodeReplay

    episodes, _ = collect([2, 3, 1, 2], limit=6)
    dm = MARLDataModule(validate(make_config(["env=matrix", "data.batch_size=4"])))
    dm.replay = EpisodeReplay(10, 4, prioritized=False, priority_alpha=0.6, priority_beta=0.4, beta_anneal_steps=1)
    dm.replay.extend(episodes)
    batch = dm.sample()
    assert batch.batch_size[1] == int(batch["filled"].sum(1).max()) + 1 <= 4


def test_transitions_are_uniform_over_the_stored_steps_and_carry_their_next_step():
    """data.sample=transitions: windows [t, t + 1] with only step t counted; each stored step equally
    likely (CountdownEnv's observation is the steps left, so episodes of 2, 5, 3 steps give the
    observations 1 and 2 three times in ten, 3 twice, 4 and 5 once), also after a checkpoint."""
    from lightning_marl.data.replay import EpisodeReplay

    episodes, _ = collect([2, 5, 3], limit=6)  # all three terminate
    replay = EpisodeReplay(10, 20_000, False, 0.6, 0.4, 1, transitions=True)
    replay.extend(episodes)
    restored = EpisodeReplay(10, 20_000, False, 0.6, 0.4, 1, transitions=True)
    restored.load_state_dict(replay.state_dict())
    for source in (replay, restored):
        torch.manual_seed(1)
        batch = source.sample()
        assert batch.batch_size == (20_000, 2)
        assert batch["filled"][:, 0].all() and not batch["filled"][:, 1].any()
        obs, next_obs = batch["obs"][:, 0, 0, 0], batch["obs"][:, 1, 0, 0]
        assert torch.equal(next_obs, obs - 1)  # the next step of the same episode
        assert torch.equal(batch["terminated"][:, 0], obs == 1)  # the last step of an episode ends it
        share = torch.stack([(obs == left).float().mean() for left in range(1, 6)])
        assert torch.allclose(share, torch.tensor([0.3, 0.3, 0.2, 0.1, 0.1]), atol=0.015), share


def test_checkpointed_replay_writes_only_its_episodes_and_copies_nothing(tmp_path):
    """The replay's checkpoint state shares the replay's memory (no second copy while a checkpoint is
    written) and ``torch.save`` writes the held episodes only, not the preallocated capacity; loaded
    back, it samples the same episodes."""
    from lightning_marl.data.replay import EpisodeReplay

    episodes, _ = collect([2, 5, 3], limit=6)
    replay = EpisodeReplay(1000, 3, False, 0.6, 0.4, 1)
    replay.extend(episodes)
    state = replay.state_dict()
    obs, stored = state["episodes"]["obs"], replay.buffer.storage[:3]["obs"]
    assert obs.data_ptr() == stored.data_ptr() and torch.equal(obs, episodes["obs"])
    assert obs.untyped_storage().nbytes() == obs.numel() * obs.element_size()  # 3 episodes, not 1000
    torch.save(state, tmp_path / "replay.pt")
    held = sum(t.numel() * t.element_size() for t in episodes.exclude("index").values(True, True))
    assert (tmp_path / "replay.pt").stat().st_size < 2 * held + 20_000  # not 1000 slots' worth (~333x)
    restored = EpisodeReplay(1000, 3, False, 0.6, 0.4, 1)
    restored.load_state_dict(torch.load(tmp_path / "replay.pt", weights_only=True, mmap=True))
    assert torch.equal(restored.buffer.storage[:3].exclude("index").to_dict()["obs"], episodes["obs"])


def test_describe_env_of_worker_processes_whose_games_lack_a_grid_asks_no_worker():
    """A ParallelEnv forwards unknown attributes to its workers; describe_env must not ask them for
    obs_grid_shape (SMACLite's games lack it, and asking killed the workers)."""
    from functools import partial

    from torchrl.envs import ParallelEnv

    from lightning_marl.data.environments import describe_env
    from lightning_marl.envs import make_env

    game = partial(make_env, "matrix", 1)  # a matrix game has no obs_grid_shape
    env = ParallelEnv(2, [game, game], mp_start_method="fork", use_buffers=False)
    for name, value in (("n_agents", 2), ("n_actions", 3), ("episode_limit", 1), ("stat_keys", ())):
        setattr(env, name, value)  # as lightning_marl.envs.batching.batch_games does
    try:
        info = describe_env(env)
        assert info["obs_grid_shape"] is None and info["obs_dim"] == 1 and info["n_actions"] == 3
        assert env.rollout(2).batch_size[0] == 2  # the workers are alive
    finally:
        env.close()
