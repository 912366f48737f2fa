"""lightning_marl: cooperative multi-agent RL by value factorization, on Lightning + TorchRL."""

__version__ = "0.1.0"
