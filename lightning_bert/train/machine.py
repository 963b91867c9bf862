"""What the machine must offer a run, checked before any data work: the accelerator it names, a launcher
for more than one node, and writable output and cache directories. Each refusal is one line (UserError):
Lightning finds the first two only when the Trainer is built (after the corpus is tokenized), and without a
launcher a multi-node run waits for peers that never come."""
from __future__ import annotations

import errno
import os
from pathlib import Path

from omegaconf import DictConfig

from lightning_bert.errors import UserError
from lightning_bert.train.durable import CannotWrite, atomic_write_text

# Set by hand on each node for Lightning's general-purpose cluster (MASTER_ADDR + NODE_RANK), or by a
# Kubeflow PyTorchJob (MASTER_ADDR + RANK), which Lightning cannot detect by itself.
NODE_ADDRESS, NODE_INDEX = "MASTER_ADDR", ("NODE_RANK", "RANK")


def check_accelerator(accelerator: str, devices: int, section: str = "trainer") -> None:
    """The named accelerator exists here, with enough devices."""
    import torch

    if accelerator in ("gpu", "cuda"):
        found = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if found == 0:
            raise UserError(f"{section}.accelerator={accelerator} but this machine has no CUDA GPU; use "
                            f"{section}.accelerator=cpu (or auto)")
        if devices > found:
            raise UserError(f"{section}.devices={devices} but this machine has {found} GPU(s); it must be <= {found}")
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"{section}.accelerator=mps but this machine has no Apple GPU; use {section}.accelerator=cpu")


def check_launcher(num_nodes: int) -> None:
    """More than one node needs a launcher that tells each process its node (else every rank waits)."""
    if num_nodes <= 1:
        return
    from lightning.fabric.plugins.environments import LSFEnvironment, SLURMEnvironment, TorchElasticEnvironment

    launched = any(env.detect() for env in (SLURMEnvironment, TorchElasticEnvironment, LSFEnvironment))
    by_hand = NODE_ADDRESS in os.environ and any(name in os.environ for name in NODE_INDEX)
    if not (launched or by_hand):
        raise UserError(f"trainer.num_nodes={num_nodes} needs a launcher (srun under SLURM, torchrun --nnodes, or "
                        f"{NODE_ADDRESS} and {NODE_INDEX[0]} set on every node); none was found, so the run would "
                        "wait for the other nodes forever")


def check_writable(directory: Path) -> None:
    """`directory` can be created and written: a tiny probe file in it, or in its nearest existing ancestor
    (nothing is created before the data work). A read-only, full or forbidden place, or a file in the way,
    fails now in one line (CannotWrite), not after the corpus is tokenized or the model trained."""
    directory = Path(directory).expanduser()
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise CannotWrite(directory, OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)))
    probe = existing / f".write-probe-{os.getpid()}"
    try:
        atomic_write_text(probe, "ok")
    except CannotWrite as err:
        raise CannotWrite(directory, OSError(err.errno, err.reason)) from None
    probe.unlink(missing_ok=True)


def check_machine(cfg: DictConfig) -> None:
    """All of the above for a pretraining run."""
    check_accelerator(cfg.trainer.accelerator, cfg.trainer.devices)
    check_launcher(cfg.trainer.num_nodes)
    check_writable(Path(cfg.data.cache_dir))
