import pytest
import torch

from lightning_marl.targets import td_lambda_targets

G, L = 0.9, 0.5


def test_terminated_episode_matches_hand_computation():
    # 3 steps then terminated; Q̄ at t = 0..3 (index 0 is never an input; index 3 = after the last step, unused).
    r = torch.tensor([[1.0, 2.0, 3.0]])
    term = torch.tensor([[False, False, True]])
    filled = torch.ones(1, 3, dtype=torch.bool)
    q = torch.tensor([[10.0, 20.0, 30.0, 1000.0]])
    g2 = 3.0                                   # terminal: no bootstrap
    g1 = 2.0 + G * ((1 - L) * 30.0 + L * g2)   # 2 + 0.9 * (15 + 1.5) = 16.85
    g0 = 1.0 + G * ((1 - L) * 20.0 + L * g1)   # 1 + 0.9 * (10 + 8.425) = 17.5825
    out = td_lambda_targets(r, term, filled, q[:, 1:], G, L)
    assert out[0].tolist() == pytest.approx([g0, g1, g2])


def test_truncated_episode_bootstraps_from_final_observation():
    r = torch.tensor([[1.0, 2.0, 3.0]])
    term = torch.zeros(1, 3, dtype=torch.bool)   # time limit: truncated, not terminated
    filled = torch.ones(1, 3, dtype=torch.bool)
    q = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    g2 = 3.0 + G * 40.0
    g1 = 2.0 + G * ((1 - L) * 30.0 + L * g2)
    g0 = 1.0 + G * ((1 - L) * 20.0 + L * g1)
    out = td_lambda_targets(r, term, filled, q[:, 1:], G, L)
    assert out[0].tolist() == pytest.approx([g0, g1, g2])


def test_padding_after_the_episode_does_not_leak_into_targets():
    # Episode of 2 steps padded to 4; the padded Q̄ and rewards are garbage.
    r = torch.tensor([[1.0, 2.0, 99.0, 99.0]])
    term = torch.tensor([[False, True, False, False]])
    filled = torch.tensor([[True, True, False, False]])
    q = torch.tensor([[10.0, 20.0, -500.0, -500.0, -500.0]])
    out = td_lambda_targets(r, term, filled, q[:, 1:], G, L)
    g1 = 2.0
    g0 = 1.0 + G * ((1 - L) * 20.0 + L * g1)
    assert out[0, :2].tolist() == pytest.approx([g0, g1])
    # truncated after 2 steps: bootstrap from Q̄ index 2, the final observation
    out = td_lambda_targets(r, torch.zeros_like(term), filled, q.clone().index_fill_(1, torch.tensor([2]), 7.0)[:, 1:], G, L)
    g1 = 2.0 + G * 7.0
    assert out[0, :2].tolist() == pytest.approx([1.0 + G * ((1 - L) * 20.0 + L * g1), g1])


def test_lambda_zero_is_one_step_and_lambda_one_is_monte_carlo():
    r = torch.tensor([[1.0, 1.0, 1.0]])
    term = torch.tensor([[False, False, True]])
    filled = torch.ones(1, 3, dtype=torch.bool)
    q = torch.tensor([[5.0, 6.0, 7.0, 0.0]])
    one_step = td_lambda_targets(r, term, filled, q[:, 1:], G, 0.0)
    assert one_step[0].tolist() == pytest.approx([1 + G * 6.0, 1 + G * 7.0, 1.0])
    mc = td_lambda_targets(r, term, filled, q[:, 1:], G, 1.0)
    assert mc[0].tolist() == pytest.approx([1 + G + G * G, 1 + G, 1.0])


def test_optimistic_weighting_keeps_underestimates_and_scales_down_overestimates():
    from lightning_marl.config.schema import LearnerConfig
    from lightning_marl.module import td_weights

    q_tot = torch.tensor([[1.0, 5.0, 2.0]])
    targets = torch.tensor([[3.0, 4.0, 2.0]])
    assert td_weights(q_tot, targets, LearnerConfig(td_weighting="none")) == 1.0
    weights = td_weights(q_tot, targets, LearnerConfig(td_weighting="optimistic", optimistic_alpha=0.25))
    assert weights.tolist() == [[1.0, 0.25, 0.25]]  # under: 1; over or equal: alpha


def test_one_step_targets_at_once_equal_the_recursion_bitwise():
    """lambda = 0 takes the vectorized path; on random padded episodes (terminated, truncated, padding)
    it gives bitwise the recursion's values wherever the episode has steps."""
    from lightning_marl.targets import lambda_returns

    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 9, (64,), generator=gen)
    filled = torch.arange(8)[None] < lengths[:, None]
    term = (torch.arange(8)[None] == lengths[:, None] - 1) & (torch.rand(64, 1, generator=gen) < 0.5)
    r, q = torch.randn(64, 8, generator=gen), torch.randn(64, 9, generator=gen)
    fast, slow = td_lambda_targets(r, term, filled, q[:, 1:], 0.99, 0.0), lambda_returns(r, term, filled, q[:, 1:], 0.99, 0.0)
    assert torch.equal(fast[filled], slow[filled])
