"""QMIX (Rashid et al., 2018)."""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from lightning_marl.config.schema import spec
from lightning_marl.models.mixers.base import CentralMixerConfig, Mixer, chosen_q
from lightning_marl.registry import MIXERS


def hypernet(in_dim: int, out_dim: int, layers: int, hidden: int) -> nn.Module:
    """A hypernetwork: one linear layer, or two with a ReLU and ``hidden`` units."""
    assert layers in (1, 2), layers  # mixer.hypernet_layers: the config's choices
    if layers == 1:
        return nn.Linear(in_dim, out_dim)
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))


class MonotonicMix(nn.Module):
    """The monotone QMIX function ``f(x; z)`` of per-agent inputs ``x [*B,N]``:

    ``f(x; z) = |W_2(z)|^T ELU(|W_1(z)|^T x + b_1(z)) + V(z)``, so that ``df/dx_i >= 0``.
    """

    def __init__(self, n_agents: int, central_dim: int, embed_dim: int, hypernet_layers: int, hypernet_embed: int):
        super().__init__()
        self.n_agents, self.embed_dim = n_agents, embed_dim
        self.hyper_w1 = hypernet(central_dim, n_agents * embed_dim, hypernet_layers, hypernet_embed)
        self.hyper_w2 = hypernet(central_dim, embed_dim, hypernet_layers, hypernet_embed)
        self.hyper_b1 = nn.Linear(central_dim, embed_dim)
        self.hyper_v = nn.Sequential(nn.Linear(central_dim, embed_dim), nn.ReLU(), nn.Linear(embed_dim, 1))

    def forward(self, x: torch.Tensor, central: torch.Tensor) -> torch.Tensor:
        w1 = self.hyper_w1(central).abs().view(*x.shape[:-1], self.n_agents, self.embed_dim)
        b1 = self.hyper_b1(central)
        # (x^T W_1) as a broadcast multiply-sum: many tiny bmm calls are far slower on CPU
        hidden = F.elu((x.unsqueeze(-1) * w1).sum(-2) + b1)
        w2 = self.hyper_w2(central).abs()
        return (hidden * w2).sum(-1) + self.hyper_v(central).squeeze(-1)


class QMIXMixer(Mixer):
    """QMIX: ``Q_tot = f(Q_1(a_1), ..., Q_N(a_N); z)`` with :class:`MonotonicMix` f (dQ_tot/dQ_i >= 0)."""

    def __init__(self, n_agents: int, n_actions: int, central_dim: int, *, embed_dim: int, hypernet_layers: int,
                 hypernet_embed: int):
        super().__init__(n_agents, n_actions, central_dim)
        self.mix = MonotonicMix(n_agents, central_dim, embed_dim, hypernet_layers, hypernet_embed)

    def forward(self, q_values: torch.Tensor, actions: torch.Tensor, central: torch.Tensor,
                action_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.mix(chosen_q(q_values, actions), central)


@MIXERS.register
@dataclasses.dataclass
class QMIXConfig(CentralMixerConfig):
    """QMIX: monotone hypernetwork mixing of Q_i(a_i) conditioned on z."""

    builds = QMIXMixer
    name: str = "qmix"
    embed_dim: int = spec(32, "mixing embedding", ge=1)
    hypernet_layers: int = spec(2, "layers of the weight hypernetworks", choices=(1, 2))
    hypernet_embed: int = spec(64, "hidden size of 2-layer hypernetworks", ge=1)
