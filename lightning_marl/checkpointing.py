"""Crash-safe checkpoints and metrics: atomic checkpoint files, and a CSV logger that continues a
resumed run's metrics file instead of replacing it."""
from __future__ import annotations

import csv
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

import torch
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.plugins.io import TorchCheckpointIO


log = logging.getLogger(__name__)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in the target folder, fsyncs it and renames it
    over the target: a reader (or a resumed run) sees the old file or the new one, never half a file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; a checkpoint is as readable as other files
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            log.info("checkpoint written: %s", path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise


class _ContinuingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics file; this one keeps its rows and header.
    With ``keep_until_step`` (the checkpoint's global step S) it keeps only the rows logged by the
    S updates before the checkpoint (``step < S``: a row's step is the index of the update that
    logged it); later rows belong to updates the resumed run replays and logs again."""

    def __init__(self, log_dir: str, keep_until_step: Optional[int] = None):
        self.keep_until_step = keep_until_step
        super().__init__(log_dir=log_dir)

    def _check_log_dir_exists(self) -> None:
        if not self._fs.isfile(self.metrics_file_path):
            return
        with open(self.metrics_file_path, newline="") as f:
            reader = csv.DictReader(f)
            keys = list(reader.fieldnames or [])
            rows = [r for r in reader
                    if self.keep_until_step is None or r.get("step") in (None, "") or int(r["step"]) < self.keep_until_step]
        with open(self.metrics_file_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        self.metrics_keys = sorted(keys)


class ContinuingCSVLogger(CSVLogger):
    """CSVLogger that appends to the run folder's ``metrics.csv`` when a run is resumed."""

    def __init__(self, *args, keep_until_step: Optional[int] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._keep_until_step = keep_until_step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(self.log_dir, self._keep_until_step)
        return self._experiment
