"""Train a value-factorization MARL agent: ``python train.py env=<env> mixer=<mixer> seed=<n> ...``
(installed: ``lightning-marl-train ...``). See :mod:`lightning_marl.cli`.

``python train.py resume=<run folder or .ckpt>`` continues a run in its own folder with its own
config; further ``key=value`` overrides (e.g. ``total_env_steps=200000``) apply on top and are kept.
"""
from lightning_marl.cli import train

if __name__ == "__main__":
    train()
