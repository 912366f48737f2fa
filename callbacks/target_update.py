"""Target-network updates: hard copies every N episodes, or soft (Polyak) after every update."""
from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import Callback


class TargetNetworkUpdate(Callback):
    """``interval_episodes > 0``: hard copy when that many episodes were collected since the last copy;
    ``interval_episodes == 0``: ``theta' <- (1 - tau) theta' + tau theta`` after every optimizer step."""

    def __init__(self, interval_episodes: int, tau: float):
        self.interval_episodes, self.tau = interval_episodes, tau
        self.last_update_episode = 0
        self.updates = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.interval_episodes == 0:
            pl_module.update_targets(self.tau)
            self.updates += 1
            return
        episodes = trainer.datamodule.episodes
        if episodes - self.last_update_episode >= self.interval_episodes:
            pl_module.update_targets(1.0)
            self.last_update_episode = episodes
            self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"last_update_episode": self.last_update_episode, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_update_episode, self.updates = state["last_update_episode"], state["updates"]
