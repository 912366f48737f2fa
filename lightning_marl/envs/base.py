"""What every environment family's config is: its options (dataclass fields, with their defaults and
what is allowed), the factory it builds games with, and what the trainer needs to know about it
(capability flags). A family registers its config with ``@ENVS.register`` in its own file."""
from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Any, Callable, ClassVar, Optional

from omegaconf import MISSING

from lightning_marl.config.schema import EnvWorkers, Frozen, StartMethod, spec

# data.env_workers -> the ``parallel`` argument of the factories of families with worker processes
PARALLEL = {EnvWorkers.auto: "auto", EnvWorkers.processes: True, EnvWorkers.in_process: False}


@dataclasses.dataclass
class EnvConfig(Frozen):
    """Options every env family has. Subclasses set ``builds`` (their factory, called as
    ``builds(num_envs, seed, device, **options)`` and returning a TorchRL ``EnvBase`` with batch size
    ``[num_envs]`` and the keys of :mod:`lightning_marl.envs.contract`) and the capability flags."""

    name: str = MISSING
    timeout_as_terminal: bool = spec(False, "true: a time-out is stored as a terminal (no bootstrap), as the "
                                            "QFIX reference and EPyMARL do on SMAC; false: it bootstraps (correct)")

    builds: ClassVar[Callable[..., Any]]
    # its games carry a "shaped_reward" key (learner.shaping_anneal_steps applies)
    shaped_reward: ClassVar[bool] = False
    # its games are Python objects batched in worker processes (data.env_workers applies)
    worker_processes: ClassVar[bool] = False
    # its batches render game index i as text (``env.render(i)``; evaluate --render)
    text_frames: ClassVar[bool] = False
    # its batches draw game i (``env.render_rgb(i)``): a GIF frame's duration in ms (evaluate --gif); None: no drawing
    gif_frame_ms: ClassVar[Optional[int]] = None
    # its GIFs are drawn by its package's own visualizer (Overcooked's; see lightning_marl.evaluate)
    gif_by_package: ClassVar[bool] = False

    def options(self) -> dict[str, Any]:
        """The factory's keyword options: every field but ``name`` and ``timeout_as_terminal`` (which
        the data module applies to the stored episodes), as plain values."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)
                if f.name not in ("name", "timeout_as_terminal")}

    def check(self) -> None:
        """The family's own checks that the schema cannot express (a payoff table's shape, a layout or
        map the installed package has); raises ConfigError, or ImportError where a package is missing."""

    def grid_observations(self) -> bool:
        """Whether the observations are flattened grids (the agents' cnn torso needs them)."""
        return False

    def make(self, num_envs: int, seed: int, device: str, workers: EnvWorkers,
             start_method: Optional[StartMethod]) -> Any:
        """``num_envs`` games; ``workers`` / ``start_method``: how families with worker processes batch
        them (``data.env_workers``, ``data.start_method``)."""
        options = self.options()
        if self.worker_processes:
            options.update(parallel=PARALLEL[EnvWorkers(workers)], start_method=_plain(start_method))
        return type(self).builds(num_envs=num_envs, seed=seed, device=device, **options)


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


__all__ = ["EnvConfig", "PARALLEL"]
