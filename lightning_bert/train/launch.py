"""Processes started by an external launcher (torchrun, SLURM): agree on one run and prepare data once.

Lightning's own DDP launcher re-runs the script in child processes that inherit the run directory
through $LIGHTNING_BERT_RUN_DIR. torchrun starts every process at once, on every node: each would pick
its own timestamped run name and build the same caches at the same time. Here the process group is
started early (Lightning then reuses it), global rank 0 names the run, and data preparation runs in
turns: global rank 0 first, then the first process of every other node (a node may have its own
disk), then everyone else, who find the caches built.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Optional, TypeVar

T = TypeVar("T")


def externally_launched() -> bool:
    """Every process of a multi-process job runs this script (torchrun / SLURM set RANK and WORLD_SIZE)."""
    return (int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ
            and "LIGHTNING_BERT_RUN_DIR" not in os.environ)


def _group() -> None:
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():  # env:// from torchrun; CPU objects over gloo, CUDA tensors over NCCL
        dist.init_process_group(backend="cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")


def agree(make: Callable[[], T]) -> T:
    """The value global rank 0 makes (e.g. the run directory), on every process."""
    if not externally_launched():
        return make()
    import torch.distributed as dist

    _group()
    value = [make() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(value, src=0)
    return value[0]  # type: ignore[return-value]


def in_turns(prepare: Callable[[], None], share: Optional[Callable[[], Any]] = None,
             receive: Optional[Callable[[Any], None]] = None) -> None:
    """Run `prepare` on rank 0, then on each node's first process, then on the rest (they hit the cache).
    `share()` on rank 0 after its turn is handed to `receive` on every other rank before theirs: the
    tokenizer, which a node with its own disk must not train again (WordPiece's trainer breaks ties
    between equal-count merges in a per-process hash order, so two trainings can differ)."""
    if not externally_launched():
        prepare()
        return
    import torch.distributed as dist

    _group()
    rank, local = dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0"))
    turn = 0 if rank == 0 else 1 if local == 0 else 2
    for phase in range(3):
        if phase == turn:
            prepare()
        dist.barrier()
        if phase == 0 and share is not None:
            value = [share() if rank == 0 else None]
            dist.broadcast_object_list(value, src=0)
            if rank != 0 and receive is not None:
                receive(value[0])


def job_owner() -> bool:
    """This process speaks for its job: not one of the ranks an external launcher started beside rank 0."""
    return not externally_launched() or os.environ.get("RANK") == "0"
