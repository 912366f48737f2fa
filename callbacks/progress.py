"""A progress bar over env steps."""
from __future__ import annotations

import logging
import shutil
import sys
from typing import Callable, Optional

from lightning.pytorch.callbacks import ProgressBar
from tqdm import tqdm

# refresh at most this often on a terminal; into a file (a cluster job's output, a study's log),
# once per this many seconds (and with each log record) instead of a flood of updates
TERMINAL_REFRESH_S, FILE_REFRESH_S = 0.5, 60.0


class ConsoleAboveBar(logging.StreamHandler):
    """A console handler that writes each record above the bar (``tqdm.write`` to its own stream).

    Why not tqdm's ``logging_redirect_tqdm``: it replaces every console handler by one that takes
    the first handler's stream and filters, so with stdout for information and stderr for warnings
    (as the run's logging is set up) warnings and errors would vanish from the console."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # as logging.StreamHandler does
            self.handleError(record)


def write_above_bar(logger: logging.Logger) -> list[tuple[logging.Handler, logging.Handler]]:
    """Swap ``logger``'s stdout/stderr handlers for :class:`ConsoleAboveBar` copies (same level,
    filters, formatter); returns the pairs, for :func:`restore_handlers`."""
    swaps = []
    for handler in list(logger.handlers):
        if type(handler) is logging.StreamHandler and handler.stream in (sys.stdout, sys.stderr):
            above = ConsoleAboveBar(handler.stream)
            above.setLevel(handler.level)
            above.setFormatter(handler.formatter)
            for f in handler.filters:
                above.addFilter(f)
            logger.removeHandler(handler)
            logger.addHandler(above)
            swaps.append((handler, above))
    return swaps


def restore_handlers(logger: logging.Logger, swaps: list[tuple[logging.Handler, logging.Handler]]) -> None:
    for handler, above in swaps:
        logger.removeHandler(above)
        logger.addHandler(handler)


def postfix(train_return: Optional[float], evaluation: dict[str, float], epsilon: float) -> str:
    """``train 18.10 | test 19.30 | won 0.60 | eps 0.050`` (won only where the env reports a win)."""
    parts = []
    if train_return is not None:
        parts.append(f"train {train_return:.2f}")
    if "test/return_mean" in evaluation:
        parts.append(f"test {evaluation['test/return_mean']:.2f}")
    if "test/battle_won_mean" in evaluation:
        parts.append(f"won {evaluation['test/battle_won_mean']:.2f}")
    parts.append(f"eps {epsilon:.3f}")
    return " | ".join(parts)


class EnvStepProgressBar(ProgressBar):
    """``env steps done/total_env_steps``, the rate in env steps/s, elapsed time and ETA, and the
    numbers a user watches: the return of the latest collected episodes, the latest greedy test
    return (and win rate where the env has one), epsilon. A resumed run's bar starts at its step.

    Why not Lightning's ``TQDMProgressBar``: it counts batches against the dataloader's length,
    which an endless stream of collected episodes does not have; budgets here are in env steps.
    While the bar is shown, log records are written above it (:class:`ConsoleAboveBar`)."""

    def __init__(self, total_env_steps: int, latest_evaluation: Callable[[], dict[str, float]]):
        super().__init__()
        self.total = int(total_env_steps)
        self.latest_evaluation = latest_evaluation
        self._enabled = True
        self.bar: Optional[tqdm] = None
        self._swaps: list = []

    # Lightning's ProgressBar interface
    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def on_train_start(self, trainer, pl_module) -> None:
        if not (self._enabled and trainer.is_global_zero):
            return
        terminal = sys.stdout.isatty()
        # a terminal that reports its size follows it; one without a size (a bare pseudo-terminal
        # reports 0 lines, which would make tqdm hide the bar) and files get a fixed width
        sized = terminal and shutil.get_terminal_size((0, 0)).lines > 0
        done = int(trainer.datamodule.env_steps)
        self.bar = tqdm(total=self.total, initial=min(done, self.total), desc="train", unit=" env steps",
                        unit_scale=True,
                        file=sys.stdout, dynamic_ncols=sized, ncols=None if sized else 120, nrows=None if sized else 20,
                        mininterval=TERMINAL_REFRESH_S if terminal else FILE_REFRESH_S, smoothing=0.1,
                        bar_format="{desc}: {n}/{total} env steps |{bar}| {percentage:3.0f}% "
                                   "[{elapsed}<{remaining}, {rate_fmt}{postfix}]")
        self._swaps = write_above_bar(logging.getLogger())
        self._refresh(trainer, pl_module, force=True)

    def _refresh(self, trainer, pl_module, force: bool = False) -> None:
        dm = trainer.datamodule
        done = min(int(dm.env_steps), self.total)
        train_return = dm.last_stats.get("return")
        self.bar.set_postfix_str(postfix(train_return, self.latest_evaluation(), pl_module.epsilon), refresh=False)
        self.bar.update(done - self.bar.n)
        if force:
            self.bar.refresh()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.bar is not None:
            self._refresh(trainer, pl_module)

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        restore_handlers(logging.getLogger(), self._swaps)
        self._swaps = []

    def on_train_end(self, trainer, pl_module) -> None:
        if self.bar is not None:
            self._refresh(trainer, pl_module, force=True)
        self._close()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._close()
