"""Stopping on a signal (SIGINT, SIGTERM as schedulers send before pre-emption, SIGUSR1 and
SIGUSR2 as SLURM sends before a time limit): the current update finishes, training stops, and the
run writes its checkpoint and exits with 128 + the signal number (130, 143, 138, 140), saying
where the checkpoint is and how to resume. Where a scheduler had its own handler for the signal
(submitit's requeue on SIGUSR2), that handler runs after the checkpoint is written
(:attr:`StopOnSignal.hand_back`), so a requeued job continues from it.

The handler only sets a flag: a signal that arrives while a checkpoint is being written never
interrupts the write. Why not Lightning's own handling: it turns SIGTERM into an exit with code 0
and no checkpoint (a pre-empted job looks finished), and Ctrl+C into a KeyboardInterrupt that can
land inside a checkpoint write.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Callable, Iterator, Optional

import torch
from lightning.pytorch.callbacks import Callback

SIGNALS = tuple(s for s in (getattr(signal, n, None) for n in ("SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2"))
                if s is not None)
_CODES = 256  # (a rank's signal travels as rank * _CODES + signum: every signal number is below it)


class StopOnSignal(Callback):
    """Install with :meth:`handling` around ``trainer.fit``; ``signum`` is the signal that stopped the run."""

    def __init__(self):
        self.signum: Optional[int] = None
        self.trainer = None
        self.previous: dict[int, object] = {}

    @property
    def hand_back(self) -> Optional[Callable]:
        """The handler the stopping signal had before (a scheduler's), if it was a Python function
        other than Python's own Ctrl+C handler; call it with ``(signum, None)`` after the checkpoint."""
        handler = self.previous.get(self.signum) if self.signum is not None else None
        return handler if callable(handler) and handler is not signal.default_int_handler else None

    @property
    def stopped(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum
            # os.write, not print: a print here can land inside another write to the same stream
            # (the progress bar's) and raise "reentrant call" in the training loop
            os.write(2, f"\n{signal.Signals(signum).name} received: stopping after the current update and writing "
                        "a checkpoint ...\n".encode())
        # Lightning checks this after each update, the data stream before each round; under DDP only
        # the ranks' common decision at the end of an update stops them (on_train_batch_end)
        if self.trainer is not None and self.trainer.world_size == 1:
            self.trainer.should_stop = True

    @contextlib.contextmanager
    def handling(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        self.previous = previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        try:
            yield
        finally:
            for s, handler in previous.items():
                # once stopped, the process is on its way out: more signals (a storm of Ctrl+C) are ignored,
                # also during the interpreter's shutdown, instead of killing it halfway through its exit
                signal.signal(s, signal.SIG_IGN if self.stopped else handler)

    def setup(self, trainer, pl_module, stage) -> None:
        self.trainer = trainer

    def on_train_start(self, trainer, pl_module) -> None:
        # Lightning installs its own SIGTERM handler when fit starts (it would end the run with exit code 0
        # through SIGTERMException and tear the data module down before the checkpoint): take it back.
        # Lightning restores the handlers it found (ours, from handling()) at its teardown.
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                signal.signal(s, self._handle)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.world_size == 1:
            if self.stopped:
                trainer.should_stop = True
            return
        # under DDP only the ranks' common decision stops a rank (a signal that arrives during the agreement
        # stays in self.signum for the next update's)
        agreed = self.agreed_signal(trainer)
        if agreed is not None:
            self.signum = agreed
            trainer.should_stop = True

    def agreed_signal(self, trainer) -> Optional[int]:
        """The signal every rank stops with after this update (None: none yet): the lowest-numbered rank's
        that has one. A signal may reach one rank only, or the ranks at different updates; all of them then
        stop after the same update with the same signal, so the rank a scheduler's handler acts on (submitit
        requeues from rank 0) acts on it, also where that rank's own signal had not arrived yet."""
        none = trainer.world_size * _CODES
        code = trainer.global_rank * _CODES + self.signum if self.signum is not None else none
        first = int(trainer.strategy.reduce(torch.tensor(code, device=trainer.strategy.root_device), reduce_op="min"))
        return None if first == none else first % _CODES
