"""The mixer call contract shared by every mixer (DESIGN.md section 4)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

NEG_INF = -1e10


def chosen_q(q_values: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Q_i(a_i): gather ``q_values [*B,N,A]`` at ``actions [*B,N]`` -> ``[*B,N]``."""
    return q_values.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)


def max_q(q_values: torch.Tensor, action_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """V_i = max_b Q_i(b) over available actions: ``[*B,N,A] -> [*B,N]``."""
    if action_mask is not None:
        q_values = q_values.masked_fill(~action_mask.bool(), NEG_INF)
    return q_values.max(dim=-1).values


class Mixer(nn.Module):
    """Base class: ``forward(q_values [*B,N,A], actions [*B,N], central [*B,D], action_mask) -> q_tot [*B]``.

    ``n_agents``, ``n_actions`` and ``central_dim`` (the size D of the centralized
    information z) are given by the trainer; the remaining config keys go to the subclass.
    ``needs_central`` tells the trainer whether to build z at all.
    """

    needs_central: bool = True

    def __init__(self, n_agents: int, n_actions: int, central_dim: int):
        super().__init__()
        self.n_agents = n_agents
        self.n_actions = n_actions
        self.central_dim = central_dim

    def forward(self, q_values: torch.Tensor, actions: torch.Tensor, central: Optional[torch.Tensor],
                action_mask: Optional[torch.Tensor] = None) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError
