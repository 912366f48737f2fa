"""EPyMARL's reward standardisation (``standardise_rewards: True``), for parity with it."""
from __future__ import annotations

import torch
from torch import nn


class RewardStandardizer(nn.Module):
    """Running mean and variance of the rewards of every sampled batch, and ``(r - mean) / std``.

    Each update merges the batch's moments into the running ones (the parallel algorithm of Chan et
    al.): with ``n`` the count so far (starting at ``1e-4``, mean 0, variance 1) and a batch of ``m``
    rewards with mean ``mu_b`` and unbiased variance ``var_b``,
    ``mean <- mean + d m / (n + m)``, ``var <- (var n + var_b m + d^2 n m / (n + m)) / (n + m)`` with
    ``d = mu_b - mean``. As in EPyMARL, a batch counts every step up to its longest episode (the
    zeros after a shorter episode's end too), and the standardised rewards form the TD targets.
    The moments are buffers: checkpointed and restored with the module.

    Why not TorchRL's ``VecNorm``/``RewardScaling``: they transform rewards as the env produces them
    (the replay would hold transformed rewards); EPyMARL's running moments come from the learner's
    sampled batches, and the replay keeps raw rewards.
    """

    def __init__(self, initial_count: float = 1e-4):
        super().__init__()
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("var", torch.ones(()))
        self.register_buffer("count", torch.tensor(float(initial_count), dtype=torch.float64))

    @torch.no_grad()
    def update(self, rewards: torch.Tensor) -> None:
        m = rewards.numel()
        batch_mean, batch_var = rewards.mean(), rewards.var()
        total = self.count + m
        delta = batch_mean - self.mean
        m2 = self.var * self.count + batch_var * m + delta.square() * self.count * m / total
        self.mean.add_((delta * m / total).to(self.mean.dtype))
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    def forward(self, rewards: torch.Tensor) -> torch.Tensor:
        return (rewards - self.mean) / self.var.sqrt()
