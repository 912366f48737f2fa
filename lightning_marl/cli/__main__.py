"""``python -m lightning_marl.cli`` (the study runner starts runs this way)."""
from lightning_marl.cli import train

train()
