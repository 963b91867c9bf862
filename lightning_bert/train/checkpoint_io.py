"""Lightning's CheckpointIO with durable in-place saves (lightning_bert/train/durable.py) that keep the previous checkpoint."""
from __future__ import annotations

import errno
import io
import logging
import os
import signal
from pathlib import Path
from typing import IO, Any, Optional

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from lightning_bert.train.durable import CannotWrite, atomic_write, temp_path

log = logging.getLogger(__name__)
# Test hook: SIGKILL this process in the middle of its N-th checkpoint save (half the bytes written).
KILL_IN_SAVE_ENV = "LIGHTNING_BERT_TEST_KILL_IN_SAVE"
PREVIOUS = "previous"  # last.ckpt's predecessor is kept as last.previous.ckpt


def previous_of(path: Path) -> Path:
    """last.ckpt -> last.previous.ckpt: the checkpoint written before it."""
    return path.with_name(f"{path.stem}.{PREVIOUS}{path.suffix}")


class DurableCheckpointIO(TorchCheckpointIO):
    """Lightning's CheckpointIO with durable, in-place saves that keep the previous checkpoint.

    Before `last.ckpt` is replaced, the old one is hard-linked as `last.previous.ckpt` (no copy, no
    space): at every instant a complete last.ckpt exists, and after the first save also its predecessor.
    Saving the same step again (the final save after a checkpoint at the last step) keeps the older one."""

    def __init__(self) -> None:
        super().__init__()
        self._saves = 0
        self._step_written: dict[Path, int] = {}

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError("DurableCheckpointIO takes no storage_options")
        path = Path(path)
        step = checkpoint.get("global_step")
        if path.is_file() and self._step_written.get(path) != step:
            self._keep_previous(path)
        self._saves += 1
        # Serialised in memory first (as Lightning does): torch's zip writer turns a full disk into an
        # unrelated RuntimeError, a plain file write reports ENOSPC.
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write(path, lambda file: self._write(file, buffer.getbuffer()))
        self._step_written[path] = step

    def _write(self, file: IO[bytes], data: memoryview) -> None:
        kill_at = os.environ.get(KILL_IN_SAVE_ENV)
        if kill_at and int(kill_at) == self._saves:  # the test hook: die with half the bytes on disk
            file.write(data[: len(data) // 2])
            file.flush()
            os.fsync(file.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        file.write(data)

    def _keep_previous(self, path: Path) -> None:
        prev = previous_of(path)
        link = temp_path(prev)
        try:
            link.unlink(missing_ok=True)
            os.link(path, link)
            os.replace(link, prev)
            link.unlink(missing_ok=True)  # rename() between two links of one file does nothing
        except OSError as err:
            link.unlink(missing_ok=True)
            if err.errno in (errno.EPERM, errno.EXDEV, errno.EOPNOTSUPP):  # no hard links here: no previous kept
                log.warning("cannot keep %s (%s): only the newest checkpoint is kept", prev, err.strerror)
                return
            raise CannotWrite(prev, err) from None

    def remove_checkpoint(self, path: Any) -> None:
        Path(path).unlink(missing_ok=True)
