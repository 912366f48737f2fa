"""Prioritized replay of whole episodes (proportional variant of Schaul et al., 2016, "Prioritized
Experience Replay"), as a torchrl ``Sampler`` for the episode replay.

Episode ``i`` is drawn with probability ``P(i) = p_i^alpha / sum_k p_k^alpha`` and its loss is
weighted by ``w_i = (n P(i))^-beta / max_k (n P(k))^-beta`` (``n`` stored episodes; the weights
correct the bias of the non-uniform draw, fully at ``beta = 1``). ``p_i`` is the largest absolute
TD error over the episode's steps at its last replay (``+ eps``), so that an episode with one rare
large error (a big reward seen a few times) keeps coming back; a new episode gets the largest
priority seen so far, so it is replayed at least once soon.

Priorities are a dense tensor over the replay's capacity and each batch is one ``multinomial`` draw
(O(capacity), a few microseconds for thousands of episodes): torchrl's own ``PrioritizedSampler``
needs its C++ segment trees, which some torchrl builds lack. The draw uses the global torch RNG,
whose state the checkpoints keep, and :meth:`state_dict` holds the priorities: a resumed run
samples exactly what the uninterrupted one would have.
"""
from __future__ import annotations

from typing import Any

import torch
from torchrl.data.replay_buffers.samplers import Sampler

WEIGHT_KEY = "priority_weight"


class EpisodePrioritySampler(Sampler):
    """Proportional prioritized sampling over the ``capacity`` episode slots of a replay (see above)."""

    def __init__(self, capacity: int, alpha: float, beta: float, eps: float = 1e-6):
        self.priority = torch.zeros(capacity, dtype=torch.float64)
        self.max_priority = 1.0
        self.alpha, self.beta, self.eps = float(alpha), float(beta), float(eps)

    def extend(self, index: torch.Tensor) -> None:
        self.priority[torch.as_tensor(index).reshape(-1)] = self.max_priority

    def add(self, index: int) -> None:
        self.extend(torch.as_tensor([index]))

    def sample(self, storage, batch_size: int) -> tuple[torch.Tensor, dict]:
        n = len(storage)
        if n == 0:
            raise RuntimeError("cannot sample from an empty replay")
        probs = self.priority[:n].pow(self.alpha)
        probs = probs / probs.sum()
        index = torch.multinomial(probs, batch_size, replacement=True, generator=self._rng)
        # (n P)^-beta normalised by its largest possible value, that of the least likely episode
        weight = (probs[index] / probs.min()).pow(-self.beta)
        return index, {WEIGHT_KEY: weight.float()}

    def update_priority(self, index, priority, *, storage=None) -> None:
        index = torch.as_tensor(index).reshape(-1)
        priority = torch.as_tensor(priority, dtype=torch.float64).reshape(-1) + self.eps
        if not torch.isfinite(priority).all():
            raise ValueError(f"replay priorities must be finite, got {priority.tolist()}")
        self.priority[index] = priority
        self.max_priority = max(self.max_priority, float(priority.max()))

    def state_dict(self) -> dict[str, Any]:
        return {"priority": self.priority.clone(), "max_priority": self.max_priority, "beta": self.beta}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.priority.copy_(state_dict["priority"])
        self.max_priority, self.beta = float(state_dict["max_priority"]), float(state_dict["beta"])

    def _empty(self) -> None:
        self.priority.zero_()
        self.max_priority = 1.0

    def dumps(self, path):
        torch.save(self.state_dict(), path)

    def loads(self, path):
        self.load_state_dict(torch.load(path, weights_only=False))

    def __repr__(self) -> str:
        return f"EpisodePrioritySampler(capacity={len(self.priority)}, alpha={self.alpha}, beta={self.beta})"
