"""What a run prints: its own messages through Python logging, known-harmless library messages
silenced (each with the reason it is harmless), every other warning kept.

The command line's logging (console and ``<session folder>/train.log``) is set up by Hydra from
``hydra.job_logging`` in ``configs/config.yaml``; :func:`configure_output` routes Lightning's own
messages and Python warnings into it, so the log file holds what the console showed.
"""
from __future__ import annotations

import logging
import warnings

# Python warnings that say nothing the user can act on: (message regex, why it is harmless)
HARMLESS_WARNINGS = (
    # training_step takes the dataloader iterator so that Lightning does not prefetch (collect) the
    # next round before this update; it consumes exactly one batch per step, which is the case
    # these two warnings are about, and no hook here relies on batch_idx.
    (r"You are using the `dataloader_iter` step flavor", "one batch per step"),
    (r"Found `dataloader_iter` argument in the `training_step`", "one batch per step"),
    # Lightning's own use of torch's pytree API (lightning/pytorch/utilities/_pytree.py), not ours;
    # the behaviour is unchanged in this torch.
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", "Lightning-internal deprecation"),
    # a resumed run (or a requeued job) writes its checkpoints into its own checkpoints/ folder,
    # which holds the checkpoint it continues from: the folder is expected not to be empty.
    (r"Checkpoint directory .* exists and is not empty", "a run's own folder"),
)

# Lightning log records that are advertisements, not information about the run
HARMLESS_RECORDS = (
    "💡 Tip:",  # "For seamless cloud logging ... try installing [litlogger]": an advert for another product
)


class DropHarmless(logging.Filter):
    """Drops the log records listed in :data:`HARMLESS_RECORDS`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in HARMLESS_RECORDS)


class BelowWarning(logging.Filter):
    """Passes records below WARNING (the console's stdout handler; warnings and errors go to stderr)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING


# libraries that print through a console handler of their own (Lightning's "INFO: ..." on stderr,
# TorchRL's coloured lines on stdout): their records go through the run's handlers instead
OWN_HANDLER_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "torchrl")
RECORD_SOURCES = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


def configure_output() -> None:
    """Silence the harmless messages above; send Lightning's and TorchRL's log records and Python
    warnings through the root logger's handlers where the command line set them up (idempotent)."""
    for pattern, _why in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in RECORD_SOURCES:  # a logger's filters apply to the records created there
        source = logging.getLogger(name)
        if not any(isinstance(f, DropHarmless) for f in source.filters):
            source.addFilter(DropHarmless())
    root = logging.getLogger()
    if root.handlers:
        for name in OWN_HANDLER_LOGGERS:
            logger = logging.getLogger(name)
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            logger.propagate = True
        logging.captureWarnings(True)
