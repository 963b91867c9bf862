"""One owner per run directory: <run dir>/run.lock names the host, pid and start time of the process that owns it.

A second run into the same directory (the same run.name twice) is refused, naming the holder. A lock
whose holder is dead (same host, no such pid) is stale, and taken over with a notice. The processes of
one job share the lock: its launcher (or global rank 0 under torchrun) takes it, and the ranks that
Lightning starts inherit it through $LIGHTNING_BERT_RUN_LOCK.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Optional

from lightning_bert.train.durable import CannotWrite, pid_alive
from lightning_bert.errors import UserError

log = logging.getLogger(__name__)
LOCK_NAME = "run.lock"
INHERITED_ENV = "LIGHTNING_BERT_RUN_LOCK"  # "host:pid" of the job's owner, seen by the ranks it starts


class RunDirInUse(UserError):
    """Another live process owns the run directory."""


def _me() -> dict[str, object]:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _owner(holder: dict[str, object]) -> str:
    return f"{holder.get('host')}:{holder.get('pid')}"


def read_lock(run_dir: Path) -> Optional[dict[str, object]]:
    try:
        return json.loads((run_dir / LOCK_NAME).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):  # torn or unreadable: treat as a lock without a known holder
        return {}


class RunLock:
    """Held from acquire() to release(); a no-op for the ranks of a job whose owner holds it."""

    def __init__(self, run_dir: Path, inherited: bool):
        self.path, self.inherited = run_dir / LOCK_NAME, inherited
        self._env_before: Optional[str] = None

    def release(self) -> None:
        if self.inherited:
            return
        holder = read_lock(self.path.parent)
        if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            self.path.unlink(missing_ok=True)
        if self._env_before is None:
            os.environ.pop(INHERITED_ENV, None)
        else:
            os.environ[INHERITED_ENV] = self._env_before


def acquire(run_dir: Path, is_owner: bool = True) -> RunLock:
    """Take `run_dir`'s lock, or join the job that holds it. `is_owner` is False on ranks other than
    global rank 0 of an externally launched job (they use rank 0's lock)."""
    holder = read_lock(run_dir)
    me = _me()
    if not is_owner or (holder and os.environ.get(INHERITED_ENV) == _owner(holder)):
        return RunLock(run_dir, inherited=True)
    if holder is not None:
        if not holder:
            raise RunDirInUse(f"{run_dir / LOCK_NAME} is unreadable: another run may own {run_dir}; "
                              "delete the lock if none does")
        same_host = holder.get("host") == me["host"]
        if not same_host or pid_alive(int(holder.get("pid", 0))):
            raise RunDirInUse(f"{run_dir} is in use by pid {holder.get('pid')} on {holder.get('host')} "
                              f"(since {holder.get('started')}); pick another run.name or wait for it to end")
        log.warning("taking over the stale lock of %s: pid %s on %s (started %s) is gone",
                    run_dir, holder.get("pid"), holder.get("host"), holder.get("started"))
        (run_dir / LOCK_NAME).unlink(missing_ok=True)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        # O_EXCL: of two processes starting at once, exactly one creates the lock
        fd = os.open(run_dir / LOCK_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return acquire(run_dir, is_owner)  # lost a race: the winner's lock is read and reported
    except OSError as err:
        raise CannotWrite(run_dir / LOCK_NAME, err) from None
    with os.fdopen(fd, "w") as file:
        file.write(json.dumps(me))
        file.flush()
        os.fsync(file.fileno())
    lock = RunLock(run_dir, inherited=False)
    lock._env_before = os.environ.get(INHERITED_ENV)
    os.environ[INHERITED_ENV] = _owner(me)
    return lock
