"""Mixers, one file each, behind the call contract of :class:`~lightning_marl.models.mixers.base.Mixer`.

``build_mixer(name, n_agents=..., n_actions=..., central_dim=..., **params)`` builds one by its
config name; ``MIXERS.names()`` lists them.
"""
from __future__ import annotations

from lightning_marl.registry import Registry

MIXERS = Registry(
    "mixer",
    {
        "vdn": "lightning_marl.models.mixers.vdn:VDNMixer",
        "qmix": "lightning_marl.models.mixers.qmix:QMIXMixer",
        "qplex": "lightning_marl.models.mixers.qplex:QPLEXMixer",
        "duelmix": "lightning_marl.models.mixers.duelmix:DuelMIXMixer",
        "qfix_sum": "lightning_marl.models.mixers.qfix:QFIXSumMixer",
        "qfix_mono": "lightning_marl.models.mixers.qfix:QFIXMonoMixer",
        "qplusfix_sum": "lightning_marl.models.mixers.qfix:QPlusFIXSumMixer",
        "qplusfix_mono": "lightning_marl.models.mixers.qfix:QPlusFIXMonoMixer",
        "qfix_lin": "lightning_marl.models.mixers.qfix:QFIXLinMixer",
        "qplusfix_lin": "lightning_marl.models.mixers.qfix:QPlusFIXLinMixer",
    },
)


def build_mixer(name: str, *, n_agents: int, n_actions: int, central_dim: int, **params):
    """Instantiate the mixer registered as ``name``."""
    return MIXERS.get(name)(n_agents=n_agents, n_actions=n_actions, central_dim=central_dim, **params)
