"""Greedy evaluation on games of their own (seeded apart from the training games)."""
from __future__ import annotations

from typing import Callable, Optional

import torch
from tensordict import TensorDict

from lightning_marl.data.collector import collect_episodes
from lightning_marl.models.policy import RecurrentPolicy


class GreedyEvaluator:
    """Plays rounds of greedy episodes on ``env`` (a batch of games) and averages their stats."""

    def __init__(self, env, episode_limit: int):
        self.env, self.episode_limit = env, episode_limit

    @torch.no_grad()
    def evaluate(self, agent: torch.nn.Module, episodes: int,
                 start_value: Optional[Callable[[TensorDict], torch.Tensor]] = None) -> dict[str, float]:
        """Mean return and mean of each env statistic over ``episodes`` greedy episodes of ``agent``;
        a :class:`~lightning_marl.errors.DivergenceError` if its Q values are not finite.
        ``start_value``: a value of each played episode (``[B]`` from the padded episodes), averaged
        as ``q_tot_start`` (the learner's value of the greedy start)."""
        policy = RecurrentPolicy(agent, 0.0, require_finite=True)
        totals: dict[str, list] = {}
        done = 0
        while done < episodes:
            played, stats = collect_episodes(self.env, policy, self.episode_limit)
            if start_value is not None:
                stats = {**stats, "q_tot_start": start_value(played).to(stats["return"].device)}
            take = min(episodes - done, len(stats["return"]))
            for key, value in stats.items():
                totals.setdefault(key, []).append(value[:take])
            done += take
        return {key: float(torch.cat(v).mean()) for key, v in totals.items()}

    def close(self) -> None:
        self.env.close(raise_if_closed=False)
