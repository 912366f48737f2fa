"""Reading checkpoints safely, choosing the one to resume from, and keeping a run's checkpoint folder tidy.

A checkpoint holds tensors and plain containers only (numbers, strings, lists, dicts): it is loaded
with ``torch.load(weights_only=True)``, so loading one runs no code, whoever wrote it. Checkpoints
written before 2026-11-29 hold numpy's RNG state as a numpy array; rebuilding an array from its bytes
is allow-listed (numpy's array reconstruction, ``ndarray`` and ``dtype``), nothing else.
"""
from __future__ import annotations

import contextlib
import pickle
import re
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch

from lightning_marl.errors import ConfigError

try:  # numpy 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy 1
    from numpy.core.multiarray import _reconstruct

OLD_RNG_GLOBALS = [_reconstruct, np.ndarray, np.dtype, type(np.dtype("uint32"))]
REQUIRED_KEYS = ("state_dict", "hyper_parameters", "MARLDataModule", "global_step")
STEP_FILE = re.compile(r"step(\d+)\.ckpt")


class CheckpointError(ConfigError):
    """A checkpoint file that cannot be used; the message names the file and why."""


@contextlib.contextmanager
def safe_loading() -> Iterator[None]:
    """``torch.load(weights_only=True)`` inside also accepts the numpy RNG arrays of older checkpoints."""
    with torch.serialization.safe_globals(OLD_RNG_GLOBALS):
        yield


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's contents (memory-mapped: a stored replay is not read until used), or a
    :class:`CheckpointError` saying what is wrong with the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; allowed: a .ckpt file written by lightning_marl")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes: a write was cut off); allowed: a complete "
                              ".ckpt file written by lightning_marl")
    try:
        with safe_loading():
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        what = found.group(1) if found else "a Python object"
        raise CheckpointError(f"checkpoint {path} holds {what}, which loading would run as code; refused (nothing "
                              "was run); allowed: checkpoints of tensors and plain data, as lightning_marl writes") \
            from None
    except Exception as err:  # noqa: BLE001 - torch raises RuntimeError, EOFError, ... for a broken file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint {path} is not a readable torch checkpoint (truncated, or another kind of "
                              f"file: {first[:120]}); allowed: a complete .ckpt file written by lightning_marl") \
            from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}; allowed: a checkpoint written by "
                              "lightning_marl's train.py")
    return state


def periodic_checkpoints(folder: Path) -> list[Path]:
    """The folder's ``step<N>.ckpt`` files, newest (largest N) first."""
    found = [(int(m.group(1)), p) for p in folder.glob("step*.ckpt") if (m := STEP_FILE.fullmatch(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def choose_checkpoint(ckpt: Path, warn: Optional[Callable[[str], None]] = None) -> tuple[Path, dict[str, Any]]:
    """``ckpt`` if it is readable; if it is a run's ``last.ckpt`` that is not, the newest readable
    periodic checkpoint beside it (``warn`` says which and why). Raises :class:`CheckpointError`
    listing every file tried when none is readable."""
    tried = []
    candidates = [ckpt] + (periodic_checkpoints(ckpt.parent) if ckpt.name == "last.ckpt" else [])
    for candidate in candidates:
        try:
            state = load_checkpoint(candidate)
        except CheckpointError as err:
            tried.append(str(err).split("; allowed:")[0])
            continue
        if tried and warn is not None:
            warn(f"warning: {'; '.join(tried)}; resuming from {candidate} (update {state['global_step']}) instead")
        return candidate, state
    raise CheckpointError(f"no readable checkpoint to resume from: {'; '.join(tried)}; allowed: a run folder with a "
                          "readable checkpoints/last.ckpt or step<N>.ckpt")


def architecture_differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``group.key: checkpoint X, config Y`` for every agent/mixer setting a checkpoint's
    hyperparameters and the config both have and disagree on."""
    out = []
    for group in ("agent", "mixer"):
        old, new = saved.get(group) or {}, now.get(group) or {}
        for key in sorted(set(old) & set(new)):
            if old[key] != new[key]:
                out.append(f"{group}.{key}: checkpoint {old[key]}, config {new[key]}")
    return out


def tidy(folder: Path, keep_all: bool) -> None:
    """Remove what crashes leave in a checkpoint folder: unfinished temporary files, and (unless
    ``keep_all``) every periodic checkpoint but the newest."""
    if not folder.is_dir():
        return
    for tmp in folder.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
    if not keep_all:
        for old in periodic_checkpoints(folder)[1:]:
            old.unlink(missing_ok=True)
