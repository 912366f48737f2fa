"""lightning_marl: cooperative multi-agent RL by value factorization, on Lightning + TorchRL.

What a script uses (the command line is ``python train.py`` / ``lightning-marl-train``):

>>> import lightning_marl as lm
>>> cfg = lm.load_config(["env=matrix", "mixer=qplusfix_sum", "total_env_steps=200", "seed=1",
...                        "trainer.enable_progress_bar=false"])
>>> cfg.mixer.w_lower_bound, cfg.learner.td_loss_scale
(-1.0, 0.5)
>>> import tempfile
>>> result = lm.run(cfg, tempfile.mkdtemp())   # trains; writes the run folder
>>> result["env_steps"] >= 200, "test/return_mean" in result["final"]
(True, True)

Building pieces alone:

>>> mixer = lm.build_mixer("qmix", n_agents=3, n_actions=5, central_dim=8)
>>> games = lm.make_env("box_pushing", num_envs=2)
>>> sorted(lm.MIXERS.names())[:3], "smaclite" in lm.ENVS.names()
(['duelmix', 'qfix_lin', 'qfix_mono'], True)

Bad values are refused with what is allowed:

>>> lm.load_config(["learner.gamma=2"])
Traceback (most recent call last):
lightning_marl.errors.ConfigError: learner.gamma=2.0 is out of range; allowed: a finite number in [0, 1]

Extending (a mixer or an environment: one file, registered with ``@MIXERS.register`` /
``@ENVS.register``): docs/extending.md.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> "module:attribute", imported on first use (``import lightning_marl`` stays cheap)
_EXPORTS = {
    "TrainConfig": "lightning_marl.config.schema:TrainConfig",
    "load_config": "lightning_marl.config:load",
    "compose_config": "lightning_marl.config:compose",
    "validate_config": "lightning_marl.config:validate",
    "spec": "lightning_marl.config.schema:spec",
    "run": "lightning_marl.experiment:run",
    "ENVS": "lightning_marl.registry:ENVS",
    "MIXERS": "lightning_marl.registry:MIXERS",
    "EnvConfig": "lightning_marl.envs.base:EnvConfig",
    "make_env": "lightning_marl.envs:make_env",
    "Mixer": "lightning_marl.models.mixers.base:Mixer",
    "MixerConfig": "lightning_marl.models.mixers.base:MixerConfig",
    "CentralMixerConfig": "lightning_marl.models.mixers.base:CentralMixerConfig",
    "build_mixer": "lightning_marl.models.mixers:build_mixer",
    "ConfigError": "lightning_marl.errors:ConfigError",
}
__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lightning_marl' has no attribute {name!r}")
    module, attribute = _EXPORTS[name].split(":")
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))
