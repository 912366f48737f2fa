"""The centralized information z that a mixer conditions on (config ``mixer.central_info``).

==================  =====================================================  ==========
mode                z                                                      size D
==================  =====================================================  ==========
``state``           the global state s_t                                   S
``history``         the agents' recurrent hidden states h_t, concatenated  N * H
``history_state``   [h_t; s_t]                                             N * H + S
``noise``           a fresh N(0, 1) vector at every call                   noise_dim
``zeros``           a constant zero vector                                 noise_dim
==================  =====================================================  ==========

Mixers do not care where z came from: they only see ``central [*B, D]``.
"""
from __future__ import annotations

import torch

from lightning_marl.config.schema import StrEnum


class Source(StrEnum):
    """Where z comes from (``mixer.central_info``)."""
    state = "state"
    history = "history"
    history_state = "history_state"
    noise = "noise"
    zeros = "zeros"


MODES = tuple(m.value for m in Source)


class CentralInfo:
    """Builds z from the state ``[*B,S]`` and the agents' hidden states ``[*B,N,H]``."""

    def __init__(self, mode: str, state_dim: int, n_agents: int, hidden_dim: int, noise_dim: int,
                 detach_history: bool):
        assert mode in MODES and noise_dim >= 1, (mode, noise_dim)  # the mixer config's ranges
        self.mode = str(mode)
        self.noise_dim = noise_dim
        self.detach_history = detach_history
        self.dim = {
            "state": state_dim,
            "history": n_agents * hidden_dim,
            "history_state": n_agents * hidden_dim + state_dim,
            "noise": noise_dim,
            "zeros": noise_dim,
        }[mode]

    @property
    def uses_history(self) -> bool:
        return self.mode.startswith("history")

    def __call__(self, state: torch.Tensor, hidden: torch.Tensor | None = None) -> torch.Tensor:
        batch = state.shape[:-1]
        if self.mode == "state":
            return state
        if self.mode in ("noise", "zeros"):
            make = torch.randn if self.mode == "noise" else torch.zeros
            return make(*batch, self.noise_dim, device=state.device, dtype=state.dtype)
        if hidden is None:
            raise ValueError(f"central_info={self.mode!r} needs the agents' hidden states")
        history = hidden.flatten(-2)
        if self.detach_history:
            history = history.detach()
        return history if self.mode == "history" else torch.cat([history, state], dim=-1)
