"""Reading checkpoints safely, writing them atomically, choosing the one to resume from, and keeping a
run's checkpoint folder tidy.

A run's checkpoint folder holds ``last.ckpt``, periodic ``step<N>.ckpt`` files and, for a DDP run,
``rank_states/<id>.rank<r>.pt``: the data-module state of rank ``r`` > 0 for the checkpoint whose own
data-module state (rank 0's) names ``{"world_size": W, "id": <id>}`` (written by
:mod:`lightning_marl.rank_states`). A checkpoint is usable only with all its rank files.

A checkpoint holds tensors and plain containers only (numbers, strings, lists, dicts): it is loaded
with ``torch.load(weights_only=True)``, so loading one runs no code, whoever wrote it. Checkpoints
written before 2026-11-29 hold numpy's RNG state as a numpy array; rebuilding an array from its bytes
is allow-listed (numpy's array reconstruction, ``ndarray`` and ``dtype``), nothing else.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import re
import tempfile
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
DATA_STATE = "MARLDataModule"
REQUIRED_KEYS = ("state_dict", "hyper_parameters", DATA_STATE, "global_step")
STEP_FILE = re.compile(r"step(\d+)\.ckpt")
RANK_FOLDER = "rank_states"
RANK_FILE = re.compile(r"(?P<id>[0-9a-f]+)\.rank(?P<rank>\d+)\.pt")
RANKS = "ranks"  # the key of the rank reference in the data-module state
REPLAY = "replay"  # the key of the replay contents in the data-module state (absent: checkpoint.replay=false)


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
    absent = [f for f in rank_files(path, state[DATA_STATE]) if not f.is_file()]
    if absent:
        raise CheckpointError(f"checkpoint {path} lacks the data of its other ranks ({', '.join(map(str, absent))} "
                              "missing); allowed: a checkpoint folder moved or copied whole, with its rank_states/")
    return state


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(obj: Any, path: Path) -> None:
    """``torch.save(obj)`` to a temporary file in the target folder, fsync, and rename it over ``path``:
    a reader sees the old file or the new one, never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; a checkpoint is as readable as other files
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def rank_reference(data_state: dict[str, Any]) -> dict[str, Any]:
    """``{"world_size": W, "id": ...}`` of a checkpoint's data-module state (older checkpoints: one rank)."""
    return data_state.get(RANKS) or {"world_size": 1}


@dataclasses.dataclass(frozen=True)
class CheckpointSummary:
    """What a resume reads from its checkpoint before training, as plain values.

    :func:`load_checkpoint` maps the file into memory: a tensor of it that stays alive keeps the whole
    file mapped, and once the run replaces the file (its next ``last.ckpt``) the old file's disk space
    stays in use until the process ends. A summary holds none of the file's tensors."""

    global_step: int
    env_steps: int
    hyper_parameters: dict[str, Any]
    world_size: int
    has_replay: bool  # rank 0's data-module state holds replay contents

    @classmethod
    def of(cls, state: dict[str, Any]) -> "CheckpointSummary":
        data = state[DATA_STATE]
        return cls(int(state["global_step"]), int(data["env_steps"]), dict(state["hyper_parameters"]),
                   int(rank_reference(data)["world_size"]), REPLAY in data)


def check_world_size(ckpt: Path | str, saved: int, world: int) -> None:
    """Refuse to continue a checkpoint of ``saved`` ranks with another number of ranks (``world``)."""
    if saved != world:
        raise CheckpointError(f"checkpoint {ckpt} holds the data (replay, games, RNG states) of {saved} rank(s) and "
                              f"this run has {world}; allowed: resume with {saved} rank(s) (trainer.devices x "
                              f"trainer.num_nodes = {saved})")


def rank_file(folder: Path, ident: str, rank: int) -> Path:
    return Path(folder) / RANK_FOLDER / f"{ident}.rank{rank}.pt"


def rank_files(ckpt: Path, data_state: dict[str, Any]) -> list[Path]:
    """The files holding ranks 1..W-1's data-module states of the checkpoint ``ckpt``."""
    ref = rank_reference(data_state)
    return [rank_file(Path(ckpt).parent, ref["id"], r) for r in range(1, ref["world_size"])]


def load_rank_state(ckpt: Path | str, data_state: dict[str, Any], rank: int) -> dict[str, Any]:
    """Rank ``rank``'s data-module state of the checkpoint ``ckpt`` (whose own is ``data_state``, rank 0's)."""
    if rank == 0:
        return data_state
    file = rank_file(Path(ckpt).parent, rank_reference(data_state)["id"], rank)
    try:
        with safe_loading():
            return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - as in load_checkpoint
        raise CheckpointError(f"rank {rank}'s data of checkpoint {ckpt} ({file}) is not readable ({type(err).__name__}"
                              f"); allowed: a checkpoint folder moved or copied whole, with its rank_states/") from None


def prune_rank_files(folder: Path, rank: Optional[int] = None) -> None:
    """Remove the rank files (of ``rank``, or of every rank) that no checkpoint in ``folder`` names."""
    files = [f for f in (Path(folder) / RANK_FOLDER).glob("*.pt")
             if (m := RANK_FILE.fullmatch(f.name)) and (rank is None or int(m.group("rank")) == rank)]
    if not files:
        return
    named = set()
    for ckpt in [Path(folder) / "last.ckpt", *periodic_checkpoints(Path(folder))]:
        try:
            with safe_loading():
                state = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
            named.add(rank_reference(state[DATA_STATE]).get("id"))
        except Exception:  # noqa: BLE001 - absent, being replaced or unreadable: it names nothing usable
            continue
    for f in files:
        if RANK_FILE.fullmatch(f.name).group("id") not in named:
            f.unlink(missing_ok=True)


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


def drop_replay(ckpt: Path | str) -> bool:
    """Rewrite the checkpoint ``ckpt`` and its rank files without the replay contents, as
    ``checkpoint.replay=false`` would have written them: weights, optimizer, counters and RNG states
    stay, so the run can still be evaluated or continued (refilling its replay first: not bitwise the
    run that kept it). As when a DDP checkpoint is written (:mod:`lightning_marl.rank_states`), the other
    ranks' states go to new rank files under a new id before the checkpoint file naming that id replaces
    the old one (atomically), and the old rank files are removed after: a process killed part-way leaves
    the old checkpoint or the new one, whole. Returns whether there was a replay to drop (nothing is
    written where there was none)."""
    import uuid

    ckpt = Path(ckpt)
    state = load_checkpoint(ckpt)
    data = state[DATA_STATE]
    ranks = [load_rank_state(ckpt, data, rank) for rank in range(1, rank_reference(data)["world_size"])]
    if not any(REPLAY in rank_state for rank_state in [data, *ranks]):
        return False
    data, *ranks = [{k: v for k, v in s.items() if k != REPLAY} for s in [data, *ranks]]
    if ranks:
        data[RANKS] = {**rank_reference(data), "id": uuid.uuid4().hex[:16]}
        for rank, rank_state in enumerate(ranks, start=1):
            write_atomic(rank_state, rank_file(ckpt.parent, data[RANKS]["id"], rank))
    write_atomic({**state, DATA_STATE: data}, ckpt)
    prune_rank_files(ckpt.parent)
    return True


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
    """Remove what crashes leave in a checkpoint folder: unfinished temporary files, (unless
    ``keep_all``) every periodic checkpoint but the newest, and rank files no checkpoint names."""
    if not folder.is_dir():
        return
    for tmp in [*folder.glob(".*.tmp"), *(folder / RANK_FOLDER).glob(".*.tmp")]:
        tmp.unlink(missing_ok=True)
    if not keep_all:
        for old in periodic_checkpoints(folder)[1:]:
            old.unlink(missing_ok=True)
    prune_rank_files(folder)
