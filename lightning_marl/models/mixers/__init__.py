"""Mixers, one file each: the mixer (a :class:`~lightning_marl.models.mixers.base.Mixer`) and its
config dataclass, registered with ``@MIXERS.register`` (:mod:`lightning_marl.registry` finds every
module of this package).
"""
from __future__ import annotations

from lightning_marl.models.mixers.base import Mixer, MixerConfig
from lightning_marl.registry import MIXERS


def mixer_config(name: str, **options) -> MixerConfig:
    """The typed config of mixer ``name``: defaults filled in, unknown options and values out of
    range refused (the API's edge; a training job's config is checked by the config validation)."""
    from lightning_marl.config.validate import typed_options

    return typed_options(MIXERS.config(name), "mixer.", name=name, **options)


def build_mixer(name: str, *, n_agents: int, n_actions: int, central_dim: int, **options) -> Mixer:
    """Build the mixer registered as ``name`` (``options`` override its config's defaults).

    >>> from lightning_marl.models.mixers import build_mixer
    >>> mixer = build_mixer("qplusfix_sum", n_agents=2, n_actions=3, central_dim=4)
    >>> sum(p.numel() for p in mixer.parameters())
    1154
    """
    return mixer_config(name, **options).build(n_agents, n_actions, central_dim)


__all__ = ["MIXERS", "Mixer", "MixerConfig", "build_mixer", "mixer_config"]
