"""One owner per run directory: a second run with the same run.name is refused naming the holder; a dead
holder's lock is taken over with a notice. The holder is a real second process, started and stopped by
the test (no timing: it reports once it holds the lock)."""
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, call_main
from lightning_bert.train.runlock import LOCK_NAME

HOLD = ("import sys; from pathlib import Path; from lightning_bert.train.runlock import acquire; "
        "lock = acquire(Path(sys.argv[1])); print('held', flush=True); sys.stdin.read(); lock.release()")


def hold(run_dir: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], cwd=REPO, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_second_run_into_a_held_directory_is_refused_naming_the_holder(
        tiny_overrides: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lightning_bert.cli import train_main

    run_dir = tmp_path / "runs" / "same"
    holder = hold(run_dir)
    try:
        code, err = call_main(capsys, train_main, tiny_overrides + ["run.name=same"])
        assert code == 2 and err.strip().splitlines()[-1].startswith(f"error: {run_dir} is in use by pid {holder.pid} on ")
        assert not (tmp_path / "cache").exists() and not (run_dir / "config.yaml").exists()  # refused before any work
        assert json.loads((run_dir / LOCK_NAME).read_text())["pid"] == holder.pid  # and the holder's lock kept
    finally:
        holder.communicate("")
    assert not (run_dir / LOCK_NAME).exists()


def test_stale_lock_of_a_dead_process_is_taken_over_with_a_notice(
        tiny_overrides: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    from lightning_bert.cli import train_main

    run_dir = tmp_path / "runs" / "stale"
    holder = hold(run_dir)
    holder.kill()  # dies holding the lock, like a node's kill -9
    holder.wait()
    assert json.loads((run_dir / LOCK_NAME).read_text())["pid"] == holder.pid
    with caplog.at_level(logging.WARNING, logger="lightning_bert"):
        code, err = call_main(capsys, train_main, tiny_overrides + ["run.name=stale", "trainer.max_steps=1",
                                                                     "eval.probes=false"])
    assert code == 0, err[-2000:]
    notices = [r.getMessage() for r in caplog.records if "stale lock" in r.getMessage()]
    assert len(notices) == 1 and f"pid {holder.pid}" in notices[0]
    assert not (run_dir / LOCK_NAME).exists() and "LIGHTNING_BERT_RUN_LOCK" not in os.environ
