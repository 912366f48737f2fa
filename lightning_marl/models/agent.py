"""The agent network shared by all agents (recurrent or feed-forward), and masked epsilon-greedy action
selection."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from lightning_marl.config.schema import AgentConfig
from lightning_marl.models.mixers.base import NEG_INF

TORSOS = ("mlp", "cnn")
ACTIVATIONS = {"relu": F.relu, "tanh": torch.tanh}


class GridTorso(nn.Module):
    """A small CNN over a channels-first observation grid ``(C, W, H)`` given flattened
    (``[*B, C*W*H]``, e.g. Overcooked's lossless encoding): two 3x3 convolutions with ``channels``
    filters, ReLU and padding 1, flattened to ``[*B, channels*W*H]``."""

    def __init__(self, grid_shape: Sequence[int], channels: int = 32):
        super().__init__()
        c, w, h = (int(v) for v in grid_shape)
        self.grid_shape, self.out_dim = (c, w, h), channels * w * h
        self.net = nn.Sequential(nn.Conv2d(c, channels, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        lead = obs.shape[:-1]
        return self.net(obs.reshape(-1, *self.grid_shape)).reshape(*lead, self.out_dim)


class RNNAgent(nn.Module):
    """One GRU network shared by all agents: ``Q_i(tau_i, .)`` over A actions; with ``recurrent=False``
    a feed-forward network ``Q_i(o_i, .)`` whose middle layer is ``Linear(H, H)`` and the activation
    instead of the GRU (EPyMARL's ``use_rnn: False``; BenchMARL's MLP of two hidden layers), the
    "hidden state" then being that layer's output at the current step.

    Input per agent and step: observation, one-hot agent id and one-hot last action (each
    switchable). With ``torso="cnn"`` the observation is a flattened ``(C, W, H)`` grid
    (``obs_grid_shape``) that a :class:`GridTorso` encodes first. With ``dueling`` the head outputs a value
    ``V_i`` and advantage logits ``U_i``
    and ``Q_i = V_i + U_i - max_b U_i(b)`` (max over available actions), so the greedy
    advantage is exactly 0 (DuelMIX's agents).

    ``forward`` unrolls a whole sequence ``[B, T, N, ...]`` with one ``nn.GRU`` call (the fast path);
    ``step`` advances one time step ``[B, N, ...]`` for acting.
    """

    @classmethod
    def from_config(cls, cfg: AgentConfig, obs_dim: int, n_agents: int, n_actions: int,
                    obs_grid_shape: Optional[Sequence[int]] = None, dueling: bool = False) -> "RNNAgent":
        """The agent ``cfg`` describes (``agent.*``) for a game's sizes; ``dueling``: heads V_i + A_i
        also where the config does not ask for them (a mixer that needs them)."""
        return cls(obs_dim, n_agents, n_actions, hidden_dim=cfg.hidden_dim, agent_id=cfg.agent_id,
                   last_action=cfg.last_action, dueling=cfg.dueling or dueling, torso=str(cfg.torso),
                   obs_grid_shape=obs_grid_shape, recurrent=cfg.recurrent, activation=str(cfg.activation))

    def __init__(self, obs_dim: int, n_agents: int, n_actions: int, *, hidden_dim: int, agent_id: bool,
                 last_action: bool, dueling: bool, torso: str, obs_grid_shape: Optional[Sequence[int]],
                 recurrent: bool, activation: str):
        super().__init__()
        self.n_agents, self.n_actions, self.hidden_dim = n_agents, n_actions, hidden_dim
        self.recurrent, self.act = recurrent, ACTIVATIONS[activation]
        self.agent_id, self.last_action, self.dueling = agent_id, last_action, dueling
        # agent.torso is the config's (a cnn only for envs with grid observations)
        assert torso in TORSOS and (torso != "cnn" or math.prod(obs_grid_shape) == obs_dim), (torso, obs_grid_shape)
        self.torso = GridTorso(obs_grid_shape) if torso == "cnn" else None
        in_dim = ((self.torso.out_dim if self.torso is not None else obs_dim)
                  + (n_agents if agent_id else 0) + (n_actions if last_action else 0))
        self.fc_in = nn.Linear(in_dim, hidden_dim)
        if recurrent:
            self.rnn = nn.GRU(hidden_dim, hidden_dim, batch_first=True)
        else:
            self.fc_mid = nn.Linear(hidden_dim, hidden_dim)
        self.fc_out = nn.Linear(hidden_dim, n_actions + (1 if dueling else 0))

    def inputs(self, obs: torch.Tensor, last_action: Optional[torch.Tensor]) -> torch.Tensor:
        """Agent input ``[*B, N, in_dim]`` from observations ``[*B,N,obs]`` and last actions ``[*B,N]``
        (``None`` or -1 = no previous action)."""
        parts = [obs if self.torso is None else self.torso(obs)]
        if self.agent_id:
            eye = torch.eye(self.n_agents, device=obs.device, dtype=obs.dtype)
            parts.append(eye.expand(*obs.shape[:-1], self.n_agents))
        if self.last_action:
            if last_action is None:
                parts.append(obs.new_zeros(*obs.shape[:-1], self.n_actions))
            else:
                onehot = F.one_hot(last_action.clamp(min=0), self.n_actions).to(obs.dtype)
                parts.append(onehot * (last_action >= 0).unsqueeze(-1).to(obs.dtype))
        return torch.cat(parts, dim=-1)

    def _head(self, out: torch.Tensor, action_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """Q-values from the output layer's result ``out`` (dueling: value and advantage logits)."""
        if not self.dueling:
            return out
        value, logits = out[..., :1], out[..., 1:]
        masked = logits if action_mask is None else logits.masked_fill(~action_mask, NEG_INF)
        return value + logits - masked.max(dim=-1, keepdim=True).values

    def initial_state(self, batch: int, device=None) -> torch.Tensor:
        return torch.zeros(batch, self.n_agents, self.hidden_dim, device=device)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor, action_mask: Optional[torch.Tensor] = None,
                steps: slice = slice(None)) -> tuple[torch.Tensor, torch.Tensor]:
        """Unroll over a sequence from the episode start.

        obs ``[B,T,N,obs]``, actions ``[B,T,N]`` (the actions taken at each step; the input at t
        uses the action of t-1), action_mask ``[B,T,N,A]`` -> (Q ``[B,T',N,A]``, hidden ``[B,T',N,H]``)
        for the time ``steps`` asked for (T' of them; all by default). A feed-forward agent computes
        only those steps (the TD loss needs the online values at t and the target's at t + 1: with
        sampled transitions, T = 2, half of each); a recurrent one unrolls from the start and slices.
        """
        b, t, n = obs.shape[:3]
        last = torch.cat([torch.full_like(actions[:, :1], -1), actions[:, :-1]], dim=1)
        if not self.recurrent:
            x = self.act(self.fc_in(self.inputs(obs[:, steps], last[:, steps])))
            h = self.act(self.fc_mid(x))
            return self._head(self.fc_out(h), None if action_mask is None else action_mask[:, steps]), h
        x = self.act(self.fc_in(self.inputs(obs, last)))
        x = x.permute(0, 2, 1, 3).reshape(b * n, t, self.hidden_dim)
        h, _ = self.rnn(x)
        # the output layer runs on the contiguous [B*N, T, H] states (on a permuted view it is a slow bmm)
        out = self.fc_out(h).reshape(b, n, t, -1).permute(0, 2, 1, 3)
        h = h.reshape(b, n, t, self.hidden_dim).permute(0, 2, 1, 3)
        return self._head(out, action_mask)[:, steps], h[:, steps]

    def step(self, obs: torch.Tensor, last_action: Optional[torch.Tensor], hidden: torch.Tensor,
             action_mask: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: obs ``[B,N,obs]``, hidden ``[B,N,H]`` -> (Q ``[B,N,A]``, new hidden)."""
        b, n = obs.shape[:2]
        x = self.act(self.fc_in(self.inputs(obs, last_action)))
        if not self.recurrent:
            h = self.act(self.fc_mid(x))
            return self._head(self.fc_out(h), action_mask), h
        _, h = self.rnn(x.reshape(b * n, 1, self.hidden_dim), hidden.reshape(1, b * n, self.hidden_dim))
        h = h.reshape(b, n, self.hidden_dim)
        return self._head(self.fc_out(h), action_mask), h


def stepwise_unroll(agent: RNNAgent, obs: torch.Tensor, actions: torch.Tensor,
                    action_mask: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference implementation of :meth:`RNNAgent.forward`: a per-time-step GRUCell loop (as in
    PyMARL) with the same weights. Kept for the equality test and the unroll benchmark."""
    assert agent.recurrent
    b, t, n = obs.shape[:3]
    rnn = agent.rnn
    h = obs.new_zeros(b * n, agent.hidden_dim)
    last = None
    qs, hs = [], []
    for step in range(t):
        x = agent.act(agent.fc_in(agent.inputs(obs[:, step], last))).reshape(b * n, -1)
        h = torch.gru_cell(x, h, rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)
        hidden = h.view(b, n, -1)
        qs.append(agent._head(agent.fc_out(hidden), None if action_mask is None else action_mask[:, step]))
        hs.append(hidden)
        last = actions[:, step]
    return torch.stack(qs, 1), torch.stack(hs, 1)


def epsilon_greedy(q_values: torch.Tensor, action_mask: torch.Tensor, epsilon: float,
                   generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Masked epsilon-greedy: greedy over available actions, or with probability ``epsilon`` a uniform
    random available action. ``[*B,N,A] -> [*B,N]``; an unavailable action is never chosen."""
    mask = action_mask.bool()
    greedy = q_values.masked_fill(~mask, NEG_INF).argmax(-1)
    if epsilon <= 0:
        return greedy
    u = torch.rand(mask.shape, device=mask.device, generator=generator)
    random = torch.where(mask, u, -1.0).argmax(-1)
    explore = torch.rand(greedy.shape, device=mask.device, generator=generator) < epsilon
    return torch.where(explore, random, greedy)
