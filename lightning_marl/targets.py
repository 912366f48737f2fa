"""TD(lambda) targets over padded episodes, with truncation kept apart from termination."""
from __future__ import annotations

import torch


def td_lambda_targets(reward: torch.Tensor, terminated: torch.Tensor, filled: torch.Tensor,
                      next_q: torch.Tensor, gamma: float, td_lambda: float) -> torch.Tensor:
    """lambda-returns ``G_t`` for ``t < T`` from rewards ``[B,T]``, termination flags ``[B,T]``, the
    validity mask ``filled [B,T]`` and the target values of the next steps ``Q̄_{t+1}``, ``next_q [B,T]``
    (target Q_tot at step t + 1, greedy action of the online network for double Q).

    ``G_t = r_t + gamma (1 - term_t) [(1 - lambda) Q̄_{t+1} + lambda G_{t+1}]`` while step t+1 is part
    of the episode, and ``G_t = r_t + gamma (1 - term_t) Q̄_{t+1}`` at its last step: a terminated
    episode does not bootstrap; a truncated one (time limit) bootstraps from ``Q̄`` of its final
    observation. Entries where ``filled`` is False are meaningless (the loss masks them).

    With ``lambda = 0`` (1-step targets) this is ``r_t + gamma (1 - term_t) Q̄_{t+1}`` for every t at
    once; otherwise a loop backwards over the T steps (:func:`lambda_returns`).
    """
    if td_lambda == 0.0:
        not_term = 1.0 - terminated.to(reward.dtype)
        return reward + gamma * not_term * next_q
    return lambda_returns(reward, terminated, filled, next_q, gamma, td_lambda)


def lambda_returns(reward: torch.Tensor, terminated: torch.Tensor, filled: torch.Tensor,
                   next_q: torch.Tensor, gamma: float, td_lambda: float) -> torch.Tensor:
    """The recursion of :func:`td_lambda_targets`, one step at a time from the last (any lambda)."""
    steps = reward.shape[1]
    not_term = 1.0 - terminated.to(reward.dtype)
    cont = torch.cat([filled[:, 1:], torch.zeros_like(filled[:, :1])], dim=1)
    out = torch.empty_like(reward)
    g_next = next_q[:, steps - 1]
    for t in range(steps - 1, -1, -1):
        nxt = torch.where(cont[:, t], (1.0 - td_lambda) * next_q[:, t] + td_lambda * g_next, next_q[:, t])
        g_next = reward[:, t] + gamma * not_term[:, t] * nxt
        out[:, t] = g_next
    return out
