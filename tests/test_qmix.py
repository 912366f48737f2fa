import torch

from lightning_marl.models.mixers import build_mixer


def test_qmix_is_monotone_in_every_agent_utility():
    torch.manual_seed(0)
    mixer = build_mixer("qmix", n_agents=4, n_actions=5, central_dim=7)
    q = torch.randn(256, 4, 5, requires_grad=True)
    actions = torch.randint(0, 5, (256, 4))
    central = torch.randn(256, 7) * 3
    q_tot = mixer(q, actions, central)
    (grad,) = torch.autograd.grad(q_tot.sum(), q)
    chosen = torch.zeros_like(grad, dtype=torch.bool).scatter_(-1, actions.unsqueeze(-1), True)
    assert (grad[chosen] >= 0).all()
    assert (grad[chosen] > 0).float().mean() > 0.5  # not trivially zero
    assert (grad[~chosen] == 0).all()               # only the taken actions enter Q_tot


def test_vdn_is_the_sum_of_taken_utilities():
    mixer = build_mixer("vdn", n_agents=3, n_actions=2, central_dim=1)
    q = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]])
    assert mixer(q, torch.tensor([[1, 0, 1]]), None).item() == 2.0 + 3.0 + 6.0
