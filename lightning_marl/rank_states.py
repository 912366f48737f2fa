"""Every DDP rank's data-module state in a checkpoint (replay, game and exploration RNG states,
counters), not only rank 0's.

Rank 0's state is inside the Lightning checkpoint file, as in a single-process run. Each other rank
``r`` writes its own to ``<checkpoint folder>/rank_states/<id>.rank<r>.pt``, where ``<id>`` is drawn
anew for every checkpoint written (broadcast from rank 0) and kept in rank 0's state as
``{"world_size": W, "id": <id>}`` (the folder layout: :mod:`lightning_marl.checkpoint_files`). Each
rank writes its file atomically and all ranks meet at a barrier before rank 0 writes the checkpoint
file, so a checkpoint file on disk always has its ranks' files beside it; a crash between the two
leaves the older checkpoint file with its own older rank files. A checkpoint stays one folder.

Why not Lightning's: under DDP, ``Strategy.save_checkpoint`` writes rank 0's checkpoint only, and
Lightning's distributed (sharded) checkpoints exist for FSDP and model-parallel strategies, not DDP.
"""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Optional

from lightning_marl.checkpoint_files import (
    RANKS,
    check_world_size,
    load_rank_state,
    prune_rank_files,
    rank_file,
    rank_reference,
    write_atomic,
)


def save(trainer, state: dict[str, Any], folder: Optional[Path]) -> dict[str, Any]:
    """Called on every rank while a checkpoint is dumped (``state``: this rank's data-module state):
    ranks > 0 write it to their own file in ``folder``; returns the reference for rank 0's state."""
    world = trainer.world_size if trainer is not None else 1
    if world == 1:
        return {"world_size": 1}
    if folder is None:
        raise RuntimeError("a DDP run's checkpoints need a checkpoint folder (a ModelCheckpoint callback)")
    ident = trainer.strategy.broadcast(uuid.uuid4().hex[:16], src=0)
    rank = trainer.global_rank
    if rank > 0:
        prune_rank_files(folder, rank)  # every checkpoint begun before this one is complete on disk
        write_atomic({k: v for k, v in state.items() if k != RANKS}, rank_file(folder, ident, rank))
    trainer.strategy.barrier("rank_states.save")
    return {"world_size": world, "id": ident}


def restore(trainer, ckpt: Path | str, state: dict[str, Any]) -> dict[str, Any]:
    """This rank's data-module state of the checkpoint ``ckpt``, whose own (rank 0's) is ``state``;
    a checkpoint of another number of ranks is refused."""
    world = trainer.world_size if trainer is not None else 1
    check_world_size(ckpt, rank_reference(state)["world_size"], world)
    return load_rank_state(ckpt, state, trainer.global_rank if world > 1 else 0)

