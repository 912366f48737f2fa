"""The episode replay: a TorchRL ``TensorDictReplayBuffer`` of padded episodes, uniform or with
:class:`~lightning_marl.data.priority.EpisodePrioritySampler`, sampled as batches trimmed to their
longest episode, or as transitions (``data.sample=transitions``), and saved in checkpoints as the
episodes it holds.

Transitions are windows of two steps, a step and the next one (its next observation; ``filled``
only at the first): the episode batch layout with T = 1, so the loss is the same code. TorchRL's
``SliceSampler`` draws slices of episodes stored step by step; here episodes are stored whole
(padded rows), so the windows are drawn from the rows directly: a row with probability proportional
to its length, then a step uniformly within it, i.e. uniform over the stored steps."""
from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDict
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

from lightning_marl.data.priority import EpisodePrioritySampler

EPISODES = "episodes"  # the key of the held episodes in the replay's checkpoint state


class EpisodeReplay:
    """``capacity`` episodes, batches of ``batch_size``. With ``prioritized``, beta grows linearly
    from ``priority_beta`` to 1 over ``beta_anneal_steps`` env steps (the argument of :meth:`sample`)."""

    def __init__(self, capacity: int, batch_size: int, prioritized: bool, priority_alpha: float,
                 priority_beta: float, beta_anneal_steps: int, transitions: bool = False):
        self.prioritized, self.batch_size, self.transitions = prioritized, batch_size, transitions
        self.lengths = torch.zeros(capacity, dtype=torch.long)  # steps of the episode in each slot
        self.priority_beta, self.beta_anneal_steps = priority_beta, max(int(beta_anneal_steps), 1)
        sampler = EpisodePrioritySampler(capacity, priority_alpha, priority_beta) if prioritized else None
        self.buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(capacity), sampler=sampler,
                                             batch_size=batch_size)

    def __len__(self) -> int:
        return len(self.buffer)

    def extend(self, episodes: TensorDict) -> None:
        episodes = episodes.to("cpu")  # replay lives on the host; one copy per sampled batch
        slots = self.buffer.extend(episodes)
        self.lengths[slots] = episodes.get("filled").sum(1)

    def sample(self, env_steps: int = 0) -> TensorDict:
        """``batch_size`` episodes trimmed to the longest one (+1 for the final observation); with
        prioritized replay they carry ``index`` and ``priority_weight``."""
        if self.prioritized:
            progress = min(1.0, env_steps / self.beta_anneal_steps)
            self.buffer.sampler.beta = self.priority_beta + (1.0 - self.priority_beta) * progress
        if self.transitions:
            return self._sample_transitions()
        batch = self.buffer.sample()
        longest = int(batch.get("filled").sum(1).max())
        return batch[:, : longest + 1]

    def _sample_transitions(self) -> TensorDict:
        """``batch_size`` windows [step t, step t + 1], uniform over the stored steps."""
        lengths = self.lengths[: len(self.buffer)]
        slots = torch.multinomial(lengths.float(), self.batch_size, replacement=True)
        steps = (torch.rand(self.batch_size) * lengths[slots]).long()
        window = self.buffer.storage[slots[:, None].expand(-1, 2), steps[:, None] + torch.arange(2)]  # [n, 2]
        window.set("filled", window.get("filled") & (torch.arange(2) == 0))  # the loss counts step t only
        return window

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
            episodes = self.buffer.storage[:n].exclude("index").apply(_own_storage)
            state.update({EPISODES: episodes.to_dict(),
                          "batch_size": list(episodes.batch_size)})  # [n, episode_limit + 1]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back :meth:`state_dict` (or TorchRL's own, in checkpoints written before 2026-11-29)."""
        if "length" not in state:
            self.buffer.load_state_dict(state)
            return
        if state["length"]:
            self.extend(TensorDict(state[EPISODES], batch_size=state["batch_size"]))  # slots 0..n-1
        self.buffer.writer.load_state_dict(state["writer"])
        self.buffer.sampler.load_state_dict(state["sampler"])


def _own_storage(view: torch.Tensor) -> torch.Tensor:
    """``view`` (the first rows of a storage tensor) on a storage of exactly its bytes, sharing memory.

    ``torch.save`` writes a tensor's whole storage: a slice of the replay's preallocated storage would
    write every slot, and a ``clone()`` of the held episodes (what this did before 2026-12-05) doubles
    the replay's memory while a checkpoint is written (SMACLite 3s5z: 3.9 GB more at a full replay).
    A slice of the storage shares its memory, so nothing is copied and only the held episodes are
    written. The state is read by the checkpoint write that asked for it, before the replay changes."""
    if not view.is_contiguous():
        return view.clone()
    start = view.storage_offset() * view.element_size()
    storage = view.untyped_storage()[start: start + view.numel() * view.element_size()]
    return torch.empty(0, dtype=view.dtype, device=view.device).set_(storage, 0, view.shape)
