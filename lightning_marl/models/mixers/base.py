"""The mixer call contract shared by every mixer (DESIGN.md section 4), and what every mixer's config
is: its options (dataclass fields with their defaults and what is allowed), the class it builds and
what the trainer needs to know about it (capability flags). A mixer registers its config with
``@MIXERS.register`` in its own file."""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Optional

import torch
from omegaconf import MISSING
from torch import nn

from lightning_marl.config.schema import Frozen, spec
from lightning_marl.models.central import Source

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
    information z) are given by the trainer; the mixer's config options go to the subclass as
    keywords (:meth:`MixerConfig.build`).
    """

    def __init__(self, n_agents: int, n_actions: int, central_dim: int):
        super().__init__()
        self.n_agents = n_agents
        self.n_actions = n_actions
        self.central_dim = central_dim

    def forward(self, q_values: torch.Tensor, actions: torch.Tensor, central: Optional[torch.Tensor],
                action_mask: Optional[torch.Tensor] = None) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclasses.dataclass
class MixerConfig(Frozen):
    """Options every mixer has. Subclasses set ``builds`` (their :class:`Mixer` subclass, called as
    ``builds(n_agents, n_actions, central_dim, **options)``) and the capability flags."""

    name: str = MISSING

    builds: ClassVar[type]
    # conditions on the centralized information z (central_info, noise_dim, detach_history)
    needs_central: ClassVar[bool] = False
    # takes QFIX intervention annealing (learner.intervention_anneal_steps; the mixer has set_intervention)
    supports_intervention: ClassVar[bool] = False
    # the mixer reports values of its own (``diagnostics(q_values, actions, central, action_mask,
    # greedy, valid) -> {name: value}``, logged as diag/mixer/<name>)
    has_diagnostics: ClassVar[bool] = False
    # config keys that configure the trainer around the mixer, not the mixer itself
    trainer_keys: ClassVar[tuple[str, ...]] = ("name",)

    def wants_dueling_agent(self) -> bool:
        """Whether the agents need dueling heads V_i + A_i."""
        return False

    def options(self) -> dict[str, Any]:
        """The mixer class's keyword options: every field but the trainer's keys."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in self.trainer_keys}

    def build(self, n_agents: int, n_actions: int, central_dim: int) -> Mixer:
        return type(self).builds(n_agents, n_actions, central_dim, **self.options())


@dataclasses.dataclass
class CentralMixerConfig(MixerConfig):
    """Mixers conditioned on centralized information z."""

    needs_central = True
    trainer_keys = ("name", "central_info", "noise_dim", "detach_history")

    central_info: Source = spec(Source.state, "z: state | history | history_state | noise | zeros")
    noise_dim: int = spec(16, "size of z for noise / zeros", ge=1)
    detach_history: bool = spec(True, "history z: no gradient from the mixer into the agents' hidden states")
