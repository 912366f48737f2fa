"""VDN (Sunehag et al., 2018)."""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from lightning_marl.models.mixers.base import Mixer, MixerConfig, chosen_q
from lightning_marl.registry import MIXERS


class VDNMixer(Mixer):
    """Value decomposition: ``Q_tot = sum_i Q_i(a_i)``. Ignores the centralized information."""

    def forward(self, q_values: torch.Tensor, actions: torch.Tensor, central: Optional[torch.Tensor] = None,
                action_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return chosen_q(q_values, actions).sum(-1)


@MIXERS.register
@dataclasses.dataclass
class VDNConfig(MixerConfig):
    """VDN: Q_tot = sum_i Q_i(a_i) (no centralized information)."""

    builds = VDNMixer
    name: str = "vdn"
