import pytest
import torch

from lightning_marl.config.schema import AgentConfig
from lightning_marl.models.agent import RNNAgent, epsilon_greedy
from lightning_marl.models.mixers.base import max_q


def random_mask(shape, generator):
    mask = torch.rand(shape, generator=generator) < 0.5
    mask[..., 0] |= ~mask.any(-1)  # at least one available action
    return mask


def test_unavailable_action_is_never_chosen_at_any_epsilon():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2000, 3, 5, generator=g) * 10
    mask = random_mask(q.shape, g)
    q[~mask] = 1e6  # unavailable actions look best
    for eps in (0.0, 0.3, 1.0):
        actions = epsilon_greedy(q, mask, eps, generator=g)
        assert mask.gather(-1, actions.unsqueeze(-1)).all(), f"unavailable action chosen at epsilon={eps}"


def test_random_choice_covers_every_available_action():
    g = torch.Generator().manual_seed(1)
    mask = torch.tensor([[True, False, True, True]]).expand(4000, 1, 4)
    actions = epsilon_greedy(torch.zeros(4000, 1, 4), mask, 1.0, generator=g)
    counts = torch.bincount(actions.flatten(), minlength=4)
    assert counts[1] == 0 and (counts[[0, 2, 3]] > 1200).all()


def test_greedy_is_argmax_over_available_actions():
    q = torch.tensor([[[5.0, 1.0, 3.0]]])
    mask = torch.tensor([[[False, True, True]]])
    assert epsilon_greedy(q, mask, 0.0).item() == 2


def test_unavailable_action_never_wins_a_max():
    q = torch.tensor([[9.0, 1.0, 2.0], [-1.0, -5.0, 7.0]])
    mask = torch.tensor([[False, True, True], [True, True, False]])
    assert max_q(q, mask).tolist() == [2.0, -1.0]


def test_dueling_agent_greedy_advantage_is_zero_over_available_actions():
    torch.manual_seed(0)
    agent = RNNAgent.from_config(AgentConfig(dueling=True), 4, 3, 5)
    obs = torch.randn(2, 6, 3, 4)
    actions = torch.randint(0, 5, (2, 6, 3))
    mask = random_mask((2, 6, 3, 5), torch.Generator().manual_seed(2))
    q, hidden = agent(obs, actions, mask)
    value = agent.fc_out(hidden)[..., 0]
    assert torch.allclose(max_q(q, mask), value, atol=1e-5)


def test_sequence_unroll_equals_step_by_step_acting():
    torch.manual_seed(0)
    agent = RNNAgent.from_config(AgentConfig(), 4, 2, 3)
    obs = torch.randn(5, 7, 2, 4)
    actions = torch.randint(0, 3, (5, 7, 2))
    q_seq, h_seq = agent(obs, actions)
    hidden, last = agent.initial_state(5), None
    for t in range(7):
        q_t, hidden = agent.step(obs[:, t], last, hidden)
        last = actions[:, t]
        assert torch.allclose(q_t, q_seq[:, t], atol=1e-5) and torch.allclose(hidden, h_seq[:, t], atol=1e-5)


def test_gru_unroll_equals_the_per_step_grucell_loop():
    from lightning_marl.models.agent import stepwise_unroll

    torch.manual_seed(3)
    agent = RNNAgent.from_config(AgentConfig(dueling=True), 6, 5, 4)
    obs = torch.randn(3, 9, 5, 6)
    actions = torch.randint(0, 4, (3, 9, 5))
    mask = random_mask((3, 9, 5, 4), torch.Generator().manual_seed(4))
    q_fast, h_fast = agent(obs, actions, mask)
    q_slow, h_slow = stepwise_unroll(agent, obs, actions, mask)
    assert torch.allclose(q_fast, q_slow, atol=1e-5) and torch.allclose(h_fast, h_slow, atol=1e-5)
    g_fast = torch.autograd.grad(q_fast.sum(), agent.rnn.weight_hh_l0)[0]
    g_slow = torch.autograd.grad(q_slow.sum(), agent.rnn.weight_hh_l0)[0]
    assert torch.allclose(g_fast, g_slow, atol=1e-4)


def test_cnn_torso_agent_unrolls_like_its_step_loop_and_trains_its_filters():
    """agent.torso=cnn on flattened (C, W, H) grids: the fast unroll equals the GRUCell loop and
    step-by-step acting, and the loss reaches the convolution filters."""
    from lightning_marl.models.agent import stepwise_unroll

    torch.manual_seed(5)
    grid = (4, 3, 5)
    agent = RNNAgent.from_config(AgentConfig(torso="cnn"), 60, 2, 3, obs_grid_shape=grid)
    obs = torch.rand(3, 6, 2, 60)
    actions = torch.randint(0, 3, (3, 6, 2))
    q_fast, h_fast = agent(obs, actions)
    q_slow, _ = stepwise_unroll(agent, obs, actions)
    assert torch.allclose(q_fast, q_slow, atol=1e-5)
    hidden, last = agent.initial_state(3), None
    for t in range(6):
        q_t, hidden = agent.step(obs[:, t], last, hidden)
        last = actions[:, t]
        assert torch.allclose(q_t, q_fast[:, t], atol=1e-5)
    first_conv = agent.torso.net[0].weight
    assert torch.autograd.grad(q_fast.sum(), first_conv)[0].abs().sum() > 0


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_feed_forward_agent_sees_only_the_current_step(activation):
    """agent.recurrent=false: Q_i(o_i) is EPyMARL's / BenchMARL's two-hidden-layer network (no GRU);
    changing an earlier observation changes nothing later, the unroll equals step-by-step acting."""
    torch.manual_seed(6)
    agent = RNNAgent.from_config(AgentConfig(recurrent=False, activation=activation, last_action=False), 4, 2, 3)
    assert not hasattr(agent, "rnn")
    obs = torch.randn(2, 5, 2, 4)
    actions = torch.randint(0, 3, (2, 5, 2))
    q, _ = agent(obs, actions)
    changed = obs.clone()
    changed[:, 0] += 1.0
    q_changed, _ = agent(changed, actions)
    assert not torch.allclose(q_changed[:, 0], q[:, 0]) and torch.equal(q_changed[:, 1:], q[:, 1:])
    hidden = agent.initial_state(2)
    for t in range(5):
        q_t, hidden = agent.step(obs[:, t], None, hidden)
        assert torch.allclose(q_t, q[:, t], atol=1e-6)
    x = agent.inputs(obs[:, 0], None)
    act = torch.relu if activation == "relu" else torch.tanh
    expected = agent.fc_out(act(agent.fc_mid(act(agent.fc_in(x)))))
    assert torch.allclose(q[:, 0], expected, atol=1e-6)
