"""Lightning callbacks that own the schedules of a run: target updates, epsilon, evaluation,
QFIX intervention annealing and reward-shaping annealing. Each one reads the env-step counter
from ``trainer.datamodule.env_steps`` and keeps its state in the checkpoint."""
