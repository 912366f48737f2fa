"""VDN (Sunehag et al., 2018)."""
from __future__ import annotations

from typing import Optional

import torch

from lightning_marl.models.mixers.base import Mixer, chosen_q


class VDNMixer(Mixer):
    """Value decomposition: ``Q_tot = sum_i Q_i(a_i)``. Ignores the centralized information."""

    needs_central = False

    def forward(self, q_values: torch.Tensor, actions: torch.Tensor, central: Optional[torch.Tensor] = None,
                action_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return chosen_q(q_values, actions).sum(-1)
