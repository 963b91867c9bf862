"""Writes that survive a crash at any instant: temp file beside the target, fsync, rename, fsync the directory.

A rename within one directory is atomic, so the target is always either the old file or the new one.
(Lightning's own save stages in $TMPDIR: on another file system the "move" is a copy that first truncates
the old checkpoint.) A write that fails (full disk, read-only mount) removes its temp file, leaves the old
file as it was and raises CannotWrite, a one-line UserError.
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import IO, Callable

from lightning_bert.errors import UserError

log = logging.getLogger(__name__)
TEMP_MARK = ".tmp-"  # temp files are named .<target name>.tmp-<pid>: a crash leaves them, cleanup knows them


class CannotWrite(UserError):
    """A write failed for a reason outside the program (no space, read-only, permissions): one line, exit 2."""

    def __init__(self, path: Path, err: OSError):
        self.path, self.reason = path, err.strerror or str(err)
        self.errno = err.errno
        super().__init__(f"cannot write {path}: {self.reason}")


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Replace `path` with what `write(file)` writes, durably; the old file survives any failure."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as err:
        _discard(tmp)
        raise CannotWrite(path, err) from None
    except BaseException:
        _discard(tmp)
        raise


def _discard(tmp: Path) -> None:
    with contextlib.suppress(OSError):  # absent, or on a read-only mount: nothing to remove
        tmp.unlink()


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda file: file.write(text.encode()))


def remove_stale_temps(directory: Path) -> list[Path]:
    """Delete temp files that dead processes left in `directory` (a kill during a save)."""
    removed = []
    for tmp in Path(directory).glob(f".*{TEMP_MARK}*"):
        pid = tmp.name.rsplit(TEMP_MARK, 1)[-1]
        if pid.isdigit() and not pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    if removed:
        log.info("removed %d temp file(s) left by an interrupted save in %s", len(removed), directory)
    return removed


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
