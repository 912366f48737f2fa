"""The episode replay: a TorchRL ``TensorDictReplayBuffer`` of padded episodes, uniform or with
:class:`~lightning_marl.data.priority.EpisodePrioritySampler`, sampled as batches trimmed to their
longest episode, and saved in checkpoints as the episodes it holds."""
from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDict
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

from lightning_marl.data.priority import EpisodePrioritySampler


class EpisodeReplay:
    """``capacity`` episodes, batches of ``batch_size``. With ``prioritized``, beta grows linearly
    from ``priority_beta`` to 1 over ``beta_anneal_steps`` env steps (the argument of :meth:`sample`)."""

    def __init__(self, capacity: int, batch_size: int, prioritized: bool, priority_alpha: float,
                 priority_beta: float, beta_anneal_steps: int):
        self.prioritized, self.batch_size = prioritized, batch_size
        self.priority_beta, self.beta_anneal_steps = priority_beta, max(int(beta_anneal_steps), 1)
        sampler = EpisodePrioritySampler(capacity, priority_alpha, priority_beta) if prioritized else None
        self.buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(capacity), sampler=sampler,
                                             batch_size=batch_size)

    def __len__(self) -> int:
        return len(self.buffer)

    def extend(self, episodes: TensorDict) -> None:
        self.buffer.extend(episodes.to("cpu"))  # replay lives on the host; one copy per sampled batch

    def sample(self, env_steps: int = 0) -> TensorDict:
        """``batch_size`` episodes trimmed to the longest one (+1 for the final observation); with
        prioritized replay they carry ``index`` and ``priority_weight``."""
        if self.prioritized:
            progress = min(1.0, env_steps / self.beta_anneal_steps)
            self.buffer.sampler.beta = self.priority_beta + (1.0 - self.priority_beta) * progress
        batch = self.buffer.sample()
        longest = int(batch.get("filled").sum(1).max())
        return batch[:, : longest + 1]

    def priority_stats(self) -> dict[str, float]:
        """``priority_max`` and ``priority_median`` over the stored episodes (empty without prioritized
        replay or before the first episode)."""
        n = len(self.buffer)
        if not self.prioritized or n == 0:
            return {}
        stored = self.buffer.sampler.priority[:n]
        return {"priority_max": float(stored.max()), "priority_median": float(stored.median())}

    def update_priority(self, index: torch.Tensor, priority: torch.Tensor) -> None:
        self.buffer.update_priority(index.cpu(), priority.detach().cpu())

    def state_dict(self) -> dict[str, Any]:
        """The episodes held (not the whole preallocated capacity, as TorchRL's ``state_dict``
        stores), in slot order, with the writer's and sampler's state."""
        n = len(self.buffer)
        state = {"length": n, "writer": self.buffer.writer.state_dict(), "sampler": self.buffer.sampler.state_dict()}
        if n:
            episodes = self.buffer.storage[:n].exclude("index").clone()  # a copy: a view would save the whole storage
            state.update(episodes=episodes.to_dict(), batch_size=list(episodes.batch_size))  # [n, episode_limit + 1]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back :meth:`state_dict` (or TorchRL's own, in checkpoints written before 2026-11-29)."""
        if "length" not in state:
            self.buffer.load_state_dict(state)
            return
        if state["length"]:
            self.buffer.extend(TensorDict(state["episodes"], batch_size=state["batch_size"]))  # slots 0..n-1
        self.buffer.writer.load_state_dict(state["writer"])
        self.buffer.sampler.load_state_dict(state["sampler"])
