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


# keys of a mixer config that configure the centralized information z, not the mixer itself
CENTRAL_KEYS = ("name", "central_info", "noise_dim", "detach_history")


def mixer_config(name: str, **params):
    """The typed config of mixer ``name`` (:mod:`lightning_marl.config.schema`): defaults filled in,
    unknown keys and values out of range refused."""
    from lightning_marl.config.schema import MIXER_SCHEMAS
    from lightning_marl.config.validate import typed_options

    MIXERS.target(name)  # an unknown name is refused with the list
    return typed_options(MIXER_SCHEMAS[name], "mixer.", **{**params, "name": name})


def build_mixer(name: str, *, n_agents: int, n_actions: int, central_dim: int, **params):
    """Instantiate the mixer registered as ``name`` from its config values (``params`` override
    the schema's defaults)."""
    import dataclasses

    cfg = mixer_config(name, **params)
    arguments = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in CENTRAL_KEYS}
    return MIXERS.get(name)(n_agents=n_agents, n_actions=n_actions, central_dim=central_dim, **arguments)
