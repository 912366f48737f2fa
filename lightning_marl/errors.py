"""The two errors a run can end with on purpose: a refused config, and a diverged training."""


class ConfigError(ValueError):
    """A configuration value is not allowed; the message names it and what is allowed."""


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss, gradient, parameter or Q value; the message names the
    update and env step. The last checkpoint written before it is the last good one."""


class Interrupted(Exception):
    """A signal stopped training; the run wrote its checkpoint. ``signum`` gives the exit code 128 + signum.
    ``hand_back``: the handler the signal had before training took it (a scheduler's own, such as
    submitit's requeue on SIGUSR2), to be called once the checkpoint is written; None if there was none."""

    def __init__(self, signum: int, message: str, hand_back=None):
        super().__init__(message)
        self.signum = signum
        self.hand_back = hand_back
