"""How a training command ends: its exit codes, and the error, divergence and signal endings of a
job mapped onto them (a refused config leaves nothing behind)."""
from __future__ import annotations

import contextlib
import logging
import shutil
import sys
from pathlib import Path
from typing import Iterator

from lightning_marl.errors import ConfigError, DivergenceError, Interrupted

EXIT_CONFIG, EXIT_DIVERGED = 2, 3
log = logging.getLogger("lightning_marl.cli")


def refused(err: ConfigError) -> None:
    """A command line refused before anything was written: one line on stderr, exit code 2."""
    print(f"error: {err}", file=sys.stderr)
    sys.exit(EXIT_CONFIG)


def remove_session_folder(session: Path) -> None:
    """Remove this session's folder if it holds nothing but what was written into it on the way in
    (its config record and log): a folder the user pointed ``hydra.run.dir`` at that holds anything
    else stays."""
    if session.is_dir() and {p.name for p in session.iterdir()} <= {".hydra", "train.log"}:
        shutil.rmtree(session, ignore_errors=True)


@contextlib.contextmanager
def job_endings(session: Path, run_dir: Path) -> Iterator[None]:
    """A job's endings as exit codes: a refused config (2, its session folder removed), a diverged
    training (3, naming the last good checkpoint), a signal (128 + signal, after the checkpoint;
    a scheduler's own handler is called then, e.g. submitit's requeue)."""
    try:
        yield
    except ConfigError as err:
        log.error("error: %s", err)
        logging.shutdown()  # close train.log before its folder goes
        remove_session_folder(session)
        sys.exit(EXIT_CONFIG)
    except DivergenceError as err:
        log.error("error: %s; the last good checkpoint is in %s", err, Path(run_dir) / "checkpoints")
        sys.exit(EXIT_DIVERGED)
    except Interrupted as err:
        log.warning("%s", err)
        if err.hand_back is not None:  # the scheduler's own handler, now that the checkpoint is written
            logging.shutdown()  # (submitit's requeues the job and exits)
            err.hand_back(err.signum, None)
        sys.exit(128 + err.signum)
