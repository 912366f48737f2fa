"""The errors a run can end with on purpose (a refused config, a diverged training, a signal), and
how a refusal is worded: ``<key>=<value> <why>; allowed: <what is allowed>``.

This module imports nothing of the project: every layer may refuse a value through it.
"""
from __future__ import annotations

from enum import Enum
from typing import Any, Sequence


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


def show(value: Any) -> str:
    """A value as it is written on the command line (``true``, ``null``, an enum's value, a list)."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, Enum):
        return str(value.value)
    if hasattr(value, "items") and not isinstance(value, dict):  # an OmegaConf or read-only mapping
        return str({k: v for k, v in value.items()})
    return str(value)


def one_of(items: Sequence[Any]) -> str:
    """``a``, ``a or b``, ``a, b or c``."""
    items = [show(i) for i in items]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def refuse(key: str, value: Any, allowed: str, why: str = "is out of range") -> ConfigError:
    """The refusal of ``key=value``: ``ConfigError("<key>=<value> <why>; allowed: <allowed>")``."""
    return ConfigError(f"{key}={show(value)} {why}; allowed: {allowed}")


__all__ = ["ConfigError", "DivergenceError", "Interrupted", "one_of", "refuse", "show"]
