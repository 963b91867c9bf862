"""Checkpoints survive a kill during a save, a full disk and a read-only directory; resume takes the newest
readable checkpoint. Faults are placed, not raced: an env hook kills at a known byte of a save, and root
mounts a tiny tmpfs (skipped where mounting is not permitted)."""
import contextlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
import torch

from conftest import REPO, call_main
from lightning_bert.train.checkpoint_io import KILL_IN_SAVE_ENV


@contextlib.contextmanager
def mounted_tmpfs(directory: Path, size: str, read_only: bool = False) -> Iterator[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=True)


def step_of(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=False)["global_step"]


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_kill_9_in_the_middle_of_a_save_keeps_the_last_good_checkpoint(tiny_overrides: list[str], tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """SIGKILL with half of the step-2 checkpoint written: last.ckpt is still step 1's, whole; the resumed run
    removes the torn temp file and finishes."""
    from lightning_bert.cli import train_main

    overrides = tiny_overrides + ["trainer.max_steps=2", "trainer.checkpoint_every_n_steps=1", "eval.probes=false",
                                  "run.name=cut"]
    proc = subprocess.run([sys.executable, "train.py", *overrides], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "WANDB_MODE": "offline", KILL_IN_SAVE_ENV: "2"})
    assert proc.returncode == -9, proc.stderr[-2000:]
    ckpts = tmp_path / "runs" / "cut" / "checkpoints"
    assert step_of(ckpts / "last.ckpt") == 1
    torn = leftovers(ckpts)
    assert len(torn) == 1 and torn[0].startswith(".last.ckpt.tmp-")  # the half-written save, nothing else
    code, err = call_main(capsys, train_main, overrides + ["run.resume=auto"])
    assert code == 0, err[-2000:]
    assert leftovers(ckpts) == [] and step_of(ckpts / "last.ckpt") == 2 and step_of(ckpts / "last.previous.ckpt") == 1
    assert not (tmp_path / "runs" / "cut" / "run.lock").exists()


def test_resume_falls_back_to_the_previous_checkpoint_when_the_last_is_unreadable(
        tiny_overrides: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    from lightning_bert.cli import train_main

    overrides = tiny_overrides + ["trainer.max_steps=4", "trainer.checkpoint_every_n_steps=2", "eval.probes=false",
                                  "run.name=a"]
    assert call_main(capsys, train_main, overrides)[0] == 0
    ckpts = tmp_path / "runs" / "a" / "checkpoints"
    assert step_of(ckpts / "last.ckpt") == 4 and step_of(ckpts / "last.previous.ckpt") == 2
    with open(ckpts / "last.ckpt", "r+b") as file:  # torn on disk (what main's cross-device copy left)
        file.truncate(1000)
    with caplog.at_level(logging.WARNING, logger="lightning_bert"):
        code, err = call_main(capsys, train_main, overrides + ["run.resume=auto"])
    assert code == 0, err[-2000:]
    notices = [r.getMessage() for r in caplog.records if "previous checkpoint" in r.getMessage()]
    assert len(notices) == 1 and "last.previous.ckpt (step 2)" in notices[0] and "last.ckpt" in notices[0]
    assert json.loads((tmp_path / "runs" / "a" / "summary.json").read_text())["global_step"] == 4
    assert step_of(ckpts / "last.ckpt") == 4


def test_full_disk_stops_with_one_line_and_keeps_the_good_checkpoint(tiny_overrides: list[str], tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A 3 MB checkpoint directory holds one 2 MB checkpoint: the step-4 save runs out of space."""
    from lightning_bert.cli import train_main

    ckpts = tmp_path / "runs" / "full" / "checkpoints"
    overrides = tiny_overrides + ["trainer.max_steps=4", "trainer.checkpoint_every_n_steps=2", "eval.probes=false",
                                  "run.name=full"]
    with mounted_tmpfs(ckpts, "3m"):
        code, err = call_main(capsys, train_main, overrides)
        last_line = err.strip().splitlines()[-1]
        assert code == 2 and last_line.startswith(f"error: cannot write {ckpts}") and \
            last_line.endswith("No space left on device"), err[-2000:]
        assert err.count("error: ") == 1
        assert step_of(ckpts / "last.ckpt") == 2 and leftovers(ckpts) == []
    summary = json.loads((tmp_path / "runs" / "full" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"].endswith("No space left on device")
    assert not (tmp_path / "runs" / "full" / "run.lock").exists()


def test_read_only_checkpoint_directory_stops_with_one_line(tiny_overrides: list[str], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from lightning_bert.cli import train_main

    ckpts = tmp_path / "runs" / "ro" / "checkpoints"
    with mounted_tmpfs(ckpts, "1m", read_only=True):
        code, err = call_main(capsys, train_main, tiny_overrides + ["trainer.max_steps=2", "eval.probes=false",
                                                                     "trainer.checkpoint_every_n_steps=2", "run.name=ro"])
        assert code == 2 and err.strip().splitlines()[-1].endswith("Read-only file system"), err[-2000:]
        assert err.count("error: ") == 1 and list(ckpts.iterdir()) == []
    summary = json.loads((tmp_path / "runs" / "ro" / "summary.json").read_text())
    assert summary["status"] == "failed" and "Read-only file system" in summary["error"]
