"""The acting policy as a TensorDict module: its recurrent state lives in the TensorDict, acting
gives the Q values the training unroll computes, and episode starts (absent state, ``is_init``)
reset the state; TorchRL's own collector can drive it."""
import torch
from torchrl.envs import InitTracker, TransformedEnv

from lightning_marl.config.schema import AgentConfig, EnvWorkers
from lightning_marl.envs import make_env
from lightning_marl.envs.contract import ACTION, MASK, OBS
from lightning_marl.models.agent import RNNAgent
from lightning_marl.models.policy import ACTION_VALUE, HIDDEN, IS_INIT, PREV_ACTION, RecurrentPolicy


def box_pushing(games: int = 3, horizon: int = 12):
    return make_env("box_pushing", games, 0, horizon=horizon, random_init=True)


def test_acting_gives_the_q_values_of_the_training_unroll():
    torch.manual_seed(0)
    env = box_pushing()
    agent = RNNAgent.from_config(AgentConfig(hidden_dim=16), env.obs_dim, env.n_agents, env.n_actions)
    policy = RecurrentPolicy(agent, 0.5, action_values=True)
    rollout = env.rollout(12, policy=policy, auto_reset=True, break_when_any_done=False, break_when_all_done=True)
    q_acting = rollout.get(ACTION_VALUE)
    with torch.no_grad():
        q_unroll, hidden = agent(rollout.get(OBS), rollout.get(ACTION), rollout.get(MASK))
    assert torch.allclose(q_acting, q_unroll, atol=1e-5)
    assert torch.allclose(rollout.get(HIDDEN), hidden, atol=1e-5)  # the state after each step
    assert torch.equal(rollout.get(PREV_ACTION), rollout.get(ACTION))


def test_the_unroll_of_some_steps_gives_those_steps_of_the_whole_unroll():
    """The TD loss asks the online agent for the steps t < T and the target for t + 1: a feed-forward
    agent computes only those (the previous action still the one before each), a recurrent one slices."""
    torch.manual_seed(0)
    obs, actions = torch.randn(4, 6, 3, 5), torch.randint(0, 4, (4, 6, 3))
    mask = torch.rand(4, 6, 3, 4) < 0.7
    mask[..., 0] = True
    for recurrent in (False, True):
        agent = RNNAgent(5, 3, 4, hidden_dim=8, agent_id=True, last_action=True, dueling=True, torso="mlp",
                         obs_grid_shape=None, recurrent=recurrent, activation="relu")
        with torch.no_grad():
            q, h = agent(obs, actions, mask)
            for steps in (slice(0, -1), slice(1, None)):
                q_part, h_part = agent(obs, actions, mask, steps)
                assert q_part.shape == q[:, steps].shape and h_part.shape == h[:, steps].shape
                assert torch.allclose(q_part, q[:, steps], atol=1e-6) and torch.allclose(h_part, h[:, steps], atol=1e-6)
        later = agent(obs, actions.index_fill(1, torch.tensor([5]), 0), mask, slice(1, None))[0]
        assert torch.equal(later, q_part)  # the last step's own action never enters the unroll


def test_is_init_restarts_the_games_it_marks():
    torch.manual_seed(1)
    env = box_pushing(games=2)
    agent = RNNAgent.from_config(AgentConfig(hidden_dim=8), env.obs_dim, env.n_agents, env.n_actions)
    policy = RecurrentPolicy(agent, 0.0, action_values=True)
    td = env.reset()
    fresh = policy(td.clone()).get(ACTION_VALUE)
    carried = td.clone()
    carried.set(HIDDEN, torch.randn(2, env.n_agents, 8))
    carried.set(PREV_ACTION, torch.ones(2, env.n_agents, dtype=torch.long))
    continuing = policy(carried.clone()).get(ACTION_VALUE)
    carried.set(IS_INIT, torch.tensor([[True], [False]]))
    mixed = policy(carried).get(ACTION_VALUE)
    assert torch.allclose(mixed[0], fresh[0]) and not torch.allclose(mixed[0], continuing[0])
    assert torch.allclose(mixed[1], continuing[1])


def test_torchrls_collector_drives_the_policy_with_init_tracking():
    from torchrl.collectors import Collector

    torch.manual_seed(2)
    env = TransformedEnv(box_pushing(games=2, horizon=5), InitTracker())
    agent = RNNAgent.from_config(AgentConfig(hidden_dim=8), env.base_env.obs_dim, env.base_env.n_agents, env.base_env.n_actions)
    policy = RecurrentPolicy(agent, 1.0, action_values=True)
    collector = Collector(env, policy, frames_per_batch=24, total_frames=24)
    batch = next(iter(collector))
    collector.shutdown()
    init = batch.get(IS_INIT).squeeze(-1)  # [games, steps]: episodes of 5 steps restart at steps 0, 5, 10
    assert init[:, 0].all() and init[:, 5].all() and not init[:, 1:5].any()
    with torch.no_grad():  # each episode's Q values equal a fresh unroll of that episode
        q, _ = agent(batch.get(OBS)[:, 5:10], batch.get(ACTION)[:, 5:10], batch.get(MASK)[:, 5:10])
    assert torch.allclose(batch.get(ACTION_VALUE)[:, 5:10], q, atol=1e-5)


def test_collector_workers_act_with_the_published_weights_and_restart_each_episode():
    """WorkerCollection (TorchRL's MultiAsyncCollector): after new weights and epsilon 0 are
    published, the episodes that arrive are greedy under the new agent, step for step, from a fresh
    recurrent state at each episode start; every episode is whole (ends with a done or the limit)."""
    from lightning_marl.data.collection import WorkerCollection
    from lightning_marl.data.environments import EnvSource
    from lightning_marl.envs import env_config
    from lightning_marl.models.mixers.base import NEG_INF

    cfg = env_config({"name": "box_pushing", "horizon": 7, "random_init": True})
    source = EnvSource(cfg, cfg, "cpu", EnvWorkers.auto, None)
    info = source.info()
    torch.manual_seed(3)
    old = RecurrentPolicy(RNNAgent.from_config(AgentConfig(hidden_dim=8), info["obs_dim"], info["n_agents"], info["n_actions"]), 1.0)
    new = RecurrentPolicy(RNNAgent.from_config(AgentConfig(hidden_dim=8), info["obs_dim"], info["n_agents"], info["n_actions"]), 0.0)
    workers = WorkerCollection(source, info["episode_limit"], processes=2, games=3, seed=5, start_method="fork")
    try:
        episodes, _ = workers.next_round(old)
        for _ in range(8):  # rounds played (partly) with the old weights drain first
            episodes, stats = workers.next_round(new)
    finally:
        workers.close()
    assert episodes.batch_size[0] == 3
    lengths = episodes["filled"].sum(1)
    assert ((lengths >= 1) & (lengths <= 7)).all() and torch.equal(stats["length"], lengths.float())
    assert (episodes["terminated"].any(1) | (lengths == 7)).all()
    with torch.no_grad():
        q, _ = new.agent(episodes["obs"], episodes["action"], episodes["avail"])
    greedy = q.masked_fill(~episodes["avail"], NEG_INF).argmax(-1)
    filled = episodes["filled"]
    assert torch.equal(episodes["action"][filled], greedy[filled])


def test_collector_workers_lose_no_episode_beginning_while_the_learner_pauses():
    """A learner busy for more than a second (evaluation, a checkpoint) must not make the workers
    drop batches: every episode that arrives starts at the reset and is whole."""
    import time

    from lightning_marl.data.collection import WorkerCollection
    from lightning_marl.data.environments import EnvSource
    from lightning_marl.envs import env_config

    cfg = env_config({"name": "box_pushing", "horizon": 7, "random_init": False})
    source = EnvSource(cfg, cfg, "cpu", EnvWorkers.auto, None)
    info = source.info()
    start = source.make(1, 0).reset().get(OBS)[0]
    policy = RecurrentPolicy(RNNAgent.from_config(AgentConfig(hidden_dim=8), info["obs_dim"], info["n_agents"], info["n_actions"]), 1.0)
    workers = WorkerCollection(source, info["episode_limit"], processes=2, games=3, seed=1, start_method="fork")
    rounds = []
    try:
        for _ in range(6):
            rounds.append(workers.next_round(policy)[0])
            time.sleep(1.5)
    finally:
        workers.close()
    for episodes in rounds:
        lengths = episodes["filled"].sum(1)
        assert (episodes["obs"][:, 0] == start).all()
        assert (episodes["terminated"].any(1) | (lengths == 7)).all()
