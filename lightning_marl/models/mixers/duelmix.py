"""DuelMIX: dueling value and advantage mixing with history-conditioned weights
(the "weighted history mixer" of stateful value factorization)."""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch
from torch.nn import functional as F

from lightning_marl.config.schema import spec
from lightning_marl.models.central import Source
from lightning_marl.models.mixers.base import CentralMixerConfig, Mixer, chosen_q, max_q
from lightning_marl.models.mixers.qplex import mlp
from lightning_marl.registry import MIXERS


class DuelMIXMixer(Mixer):
    """DuelMIX, IGM-complete:

    ``V_tot = sum_i w_i(z) V_i + b(z)`` with ``w_i = |W(z)|_i >= 0``;
    ``A_tot = sum_i lambda_i(z, a) A_i`` with ``lambda_i = |L([z; onehot(a)])|_i + 1e-10 > 0``;
    ``Q_tot = V_tot + A_tot``.

    The agents carry dueling heads (``Q_i = V_i + A_i`` with ``A_i = 0`` at the greedy action), so
    ``V_i = max_b Q_i(b)`` (over available actions) and ``A_i = Q_i(a_i) - V_i <= 0`` are read back
    from ``q_values`` alone. ``A_tot <= 0`` with equality exactly at the greedy joint action, which
    therefore maximizes ``Q_tot``. z is the joint history (``central_info: history``) by default.
    ``W`` and ``b`` are MLPs on z (``hypernet_layers``, ``hypernet_embed``); ``L`` an MLP on
    ``[z; onehot(a)]`` (``adv_hypernet_layers``, ``adv_hypernet_embed``).
    """

    def __init__(self, n_agents: int, n_actions: int, central_dim: int, *, hypernet_layers: int,
                 hypernet_embed: int, adv_hypernet_layers: int, adv_hypernet_embed: int):
        super().__init__(n_agents, n_actions, central_dim)
        self.hyper_w = mlp(central_dim, n_agents, hypernet_layers, hypernet_embed)
        self.hyper_b = mlp(central_dim, 1, 2, hypernet_embed)
        self.hyper_lambda = mlp(central_dim + n_agents * n_actions, n_agents, adv_hypernet_layers,
                                adv_hypernet_embed)

    def value_weights(self, central: torch.Tensor) -> torch.Tensor:
        """``w_i(z) [*B,N]`` (>= 0)."""
        return self.hyper_w(central).abs()

    def advantage_weights(self, central: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``lambda_i(z, a) [*B,N]`` (> 0)."""
        onehot = F.one_hot(actions.long(), self.n_actions).to(central.dtype).flatten(-2)
        return self.hyper_lambda(torch.cat([central, onehot], dim=-1)).abs() + 1e-10

    def forward(self, q_values: torch.Tensor, actions: torch.Tensor, central: torch.Tensor,
                action_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        v = max_q(q_values, action_mask)
        adv = chosen_q(q_values, actions) - v
        v_tot = (self.value_weights(central) * v).sum(-1) + self.hyper_b(central).squeeze(-1)
        a_tot = (self.advantage_weights(central, actions) * adv).sum(-1)
        return v_tot + a_tot


@MIXERS.register
@dataclasses.dataclass
class DuelMIXConfig(CentralMixerConfig):
    """DuelMIX: Q_tot = sum_i w_i(z) V_i + b(z) + sum_i lambda_i(z,a) A_i (the weighted history mixer)."""

    builds = DuelMIXMixer
    # dueling_agent gives the agents dueling heads (the trainer's key); the mixer works on any utilities
    trainer_keys = CentralMixerConfig.trainer_keys + ("dueling_agent",)
    name: str = "duelmix"
    central_info: Source = spec(Source.history, "z: state | history | history_state | noise | zeros")
    dueling_agent: bool = spec(True, "the agents get dueling heads V_i + A_i")
    hypernet_layers: int = spec(2, "layers of w_i(z)", choices=(1, 2, 3))
    hypernet_embed: int = spec(64, "hidden size of w_i(z)", ge=1)
    adv_hypernet_layers: int = spec(2, "layers of lambda_i(z, a)", choices=(1, 2, 3))
    adv_hypernet_embed: int = spec(64, "hidden size of lambda_i(z, a)", ge=1)

    def wants_dueling_agent(self) -> bool:
        return self.dueling_agent
