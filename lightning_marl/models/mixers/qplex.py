"""QPLEX: duplex dueling multi-agent Q-learning (Wang et al., 2021).

Follows the structure of the reference implementation (QPLEX / pymarl2 ``DMAQer`` with
``DMAQ_SI_Weight``): a weighted head ``w_i(z) Q_i + v_i(z)`` and a multi-head "attention" over
keys, agents and actions that produces the positive advantage weights ``lambda_i(z, a)``.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from lightning_marl.config.schema import spec
from lightning_marl.models.mixers.base import CentralMixerConfig, Mixer, chosen_q, max_q
from lightning_marl.registry import MIXERS


def mlp(in_dim: int, out_dim: int, layers: int, hidden: int) -> nn.Module:
    """``layers`` linear layers with ReLUs in between (``layers=1``: a single linear map)."""
    assert layers >= 1, layers
    mods: list[nn.Module] = []
    dim = in_dim
    for _ in range(layers - 1):
        mods += [nn.Linear(dim, hidden), nn.ReLU()]
        dim = hidden
    mods.append(nn.Linear(dim, out_dim))
    return mods[0] if len(mods) == 1 else nn.Sequential(*mods)


class QPLEXAttention(nn.Module):
    """The advantage weights ``lambda_i(z, a) = sum_k |key_k(z)| sigmoid(agent_k(z))_i
    sigmoid(action_k([z; onehot(a)]))_i + K * 1e-10 > 0`` from ``K`` kernels (``DMAQ_SI_Weight``)."""

    def __init__(self, n_agents: int, n_actions: int, central_dim: int, num_kernel: int, adv_hypernet_layers: int,
                 adv_hypernet_embed: int):
        super().__init__()
        self.n_agents, self.n_actions = n_agents, n_actions
        za_dim = central_dim + n_agents * n_actions
        layers, hidden = adv_hypernet_layers, adv_hypernet_embed
        self.key_extractors = nn.ModuleList(mlp(central_dim, 1, layers, hidden) for _ in range(num_kernel))
        self.agents_extractors = nn.ModuleList(mlp(central_dim, n_agents, layers, hidden) for _ in range(num_kernel))
        self.action_extractors = nn.ModuleList(mlp(za_dim, n_agents, layers, hidden) for _ in range(num_kernel))

    def forward(self, central: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``central [*B,D]``, ``actions [*B,N]`` -> ``lambda [*B,N]`` (> 0)."""
        onehot = F.one_hot(actions.long(), self.n_actions).to(central.dtype).flatten(-2)
        data = torch.cat([central, onehot], dim=-1)
        total = 0.0
        for key, agents, action in zip(self.key_extractors, self.agents_extractors, self.action_extractors):
            x_key = key(central).abs() + 1e-10  # [*B,1], broadcast over agents
            total = total + x_key * torch.sigmoid(agents(central)) * torch.sigmoid(action(data))
        return total


class QPLEXMixer(Mixer):
    """QPLEX (duplex dueling), IGM-complete:

    ``Q_i' = w_i(z) Q_i + v_i(z)`` with ``w_i = |W(z)|_i + 1e-10 > 0``;
    ``V_i' = w_i V_i + v_i``, ``A_i' = Q_i'(a_i) - V_i' = w_i A_i <= 0``;

    ``Q_tot = sum_i Q_i'(a_i) + sum_i (lambda_i(z, a) - 1) sg(A_i')``  (``is_minus_one``, the default),
    or ``Q_tot = sum_i Q_i'(a_i) + sum_i lambda_i(z, a) sg(A_i')`` without it,

    with ``lambda_i > 0`` from :class:`QPLEXAttention` (``num_kernel`` kernels over ``(z, onehot(a))``).
    Since ``sum_i Q_i'(a_i) = sum_i V_i' + sum_i A_i'``, the forward value is
    ``sum_i V_i' + sum_i lambda_i A_i'`` and the greedy joint action (all ``A_i = 0``) maximizes it.
    ``weighted_head=False`` uses ``w_i = 1, v_i = 0``; ``stop_gradient=False`` drops the sg().
    """

    def __init__(self, n_agents: int, n_actions: int, central_dim: int, *, hypernet_embed: int,
                 adv_hypernet_layers: int, adv_hypernet_embed: int, num_kernel: int, is_minus_one: bool,
                 weighted_head: bool, stop_gradient: bool):
        super().__init__(n_agents, n_actions, central_dim)
        self.is_minus_one, self.weighted_head, self.stop_gradient = is_minus_one, weighted_head, stop_gradient
        self.hyper_w_final = mlp(central_dim, n_agents, 2, hypernet_embed)
        self.V = mlp(central_dim, n_agents, 2, hypernet_embed)
        self.si_weight = QPLEXAttention(n_agents, n_actions, central_dim, num_kernel, adv_hypernet_layers,
                                        adv_hypernet_embed)

    def advantage_weights(self, central: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``lambda_i(z, a) [*B,N]`` (> 0)."""
        return self.si_weight(central, actions)

    def forward(self, q_values: torch.Tensor, actions: torch.Tensor, central: torch.Tensor,
                action_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        q = chosen_q(q_values, actions)
        v = max_q(q_values, action_mask)
        if self.weighted_head:
            w = self.hyper_w_final(central).abs() + 1e-10
            bias = self.V(central)
            q = w * q + bias
            v = w * v + bias
        adv = q - v
        if self.stop_gradient:
            adv = adv.detach()
        lam = self.advantage_weights(central, actions)
        if self.is_minus_one:
            lam = lam - 1.0
        return q.sum(-1) + (lam * adv).sum(-1)


@MIXERS.register
@dataclasses.dataclass
class QPLEXConfig(CentralMixerConfig):
    """QPLEX: Q_tot = sum_i Q_i'(a_i) + sum_i (lambda_i(z,a) - 1) sg(A_i')."""

    builds = QPLEXMixer
    name: str = "qplex"
    hypernet_embed: int = spec(64, "w_i(z), v_i(z) of the weighted head", ge=1)
    adv_hypernet_layers: int = spec(2, "layers per attention extractor", choices=(1, 2, 3))
    adv_hypernet_embed: int = spec(64, "hidden size of the attention extractors", ge=1)
    num_kernel: int = spec(4, "K attention kernels for lambda_i(z, a)", ge=1)
    is_minus_one: bool = spec(True, "(lambda_i - 1) sg(A_i') rather than lambda_i sg(A_i')")
    weighted_head: bool = spec(True, "Q_i' = w_i(z) Q_i + v_i(z) (false: Q_i' = Q_i)")
    stop_gradient: bool = spec(True, "sg() on the advantages A_i'")
