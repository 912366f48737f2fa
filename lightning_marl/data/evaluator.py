"""Greedy evaluation on games of their own (seeded apart from the training games)."""
from __future__ import annotations

from typing import Callable, Optional

import torch
from tensordict import TensorDict

from lightning_marl.data.collector import collect_episodes
from lightning_marl.models.policy import RecurrentPolicy


class GreedyEvaluator:
    """Plays rounds of greedy (or ``epsilon``-greedy: ``eval.epsilon``) episodes on ``env`` (a batch of
    games) and averages their stats. Its exploration draws from a generator of its own (``seed``;
    :meth:`rng_state` for checkpoints), so that evaluating never changes what training draws."""

    def __init__(self, env, episode_limit: int, epsilon: float, seed: int = 0):
        self.env, self.episode_limit, self.epsilon = env, episode_limit, epsilon
        self.generator = torch.Generator(device=getattr(env, "device", None) or "cpu").manual_seed(seed)

    @torch.no_grad()
    def evaluate(self, agent: torch.nn.Module, episodes: int,
                 start_value: Optional[Callable[[TensorDict], torch.Tensor]] = None) -> dict[str, float]:
        """Mean return and mean of each env statistic over ``episodes`` greedy episodes of ``agent``;
        a :class:`~lightning_marl.errors.DivergenceError` if its Q values are not finite.
        ``start_value``: a value of each played episode (``[B]`` from the padded episodes), averaged
        as ``q_tot_start`` (the learner's value of the greedy start)."""
        policy = RecurrentPolicy(agent, self.epsilon, generator=self.generator, require_finite=True)
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

    def rng_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_rng_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)

    def close(self) -> None:
        self.env.close(raise_if_closed=False)
