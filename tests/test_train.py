"""train.py end to end: run record, cache reuse, resume, DDP equivalence, W&B fallback."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO


def train(overrides: list[str], env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "WANDB_MODE": "offline", **(env or {})}
    proc = subprocess.run([sys.executable, "train.py", *overrides], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=full_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def offline_wandb(overrides: list[str]) -> list[str]:
    return [o for o in overrides if not o.startswith("logger.wandb.mode")] + ["logger.wandb.mode=offline"]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return ckpt["state_dict"]


def test_run_writes_record_and_second_run_reuses_caches(tiny_overrides: list[str], tmp_path: Path) -> None:
    first = train(tiny_overrides + ["run.name=a"])
    run_dir = tmp_path / "runs" / "a"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["global_step"] == 4 and summary["tokens_seen"] > 0
    assert {"val/loss", "val/mlm_acc", "val/perplexity", "probe/nsp_acc", "probe/sop_acc"} <= set(summary["metrics"])
    header = (run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"step", "tokens_seen", "train/loss", "train/lr", "val/loss"} <= set(header)
    assert (run_dir / "config.yaml").read_text().count("max_steps: 4") == 1
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "training wordpiece tokenizer" in first.stderr and "tokenizing" in first.stderr
    second = train(tiny_overrides + ["run.name=b"])
    assert "reusing tokenizer" in second.stderr and "reusing tokenized corpus" in second.stderr
    assert "training wordpiece tokenizer" not in second.stderr


def test_resume_continues_step_count_schedule_and_wandb_run(tiny_overrides: list[str], tmp_path: Path) -> None:
    overrides = offline_wandb(tiny_overrides) + ["run.name=r"]
    train(overrides + ["trainer.max_steps=4"])
    run_dir = tmp_path / "runs" / "r"
    first_id = (run_dir / "wandb_id.txt").read_text()
    train(overrides + ["trainer.max_steps=8", "run.resume=auto"])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["global_step"] == 8 and summary["wandb"]["id"] == first_id
    steps = [int(line.split(",")[1]) for line in (run_dir / "metrics.csv").read_text().splitlines()[1:]]
    assert min(steps) == 0 and max(steps) >= 7  # the first run's rows are kept, the second's appended


def test_bad_resume_checkpoint_is_one_line_error(tiny_overrides: list[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.ckpt"
    bad.write_text("not a checkpoint")
    proc = subprocess.run([sys.executable, "train.py", *tiny_overrides, f"run.resume={bad}"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "bad.ckpt" in proc.stderr


@pytest.mark.slow
def test_ddp_two_processes_match_one_process(tiny_overrides: list[str], tmp_path: Path) -> None:
    exact = tiny_overrides + ["model.dropout=0", "model.attention_dropout=0", "eval.probes=false",
                              "trainer.accelerator=cpu", "trainer.max_steps=3"]
    train(exact + ["run.name=one", "trainer.batch_size=8"])
    train(offline_wandb(exact) + ["run.name=two", "trainer.batch_size=4", "trainer.devices=2", "trainer.strategy=ddp"])
    assert len(list((tmp_path / "runs" / "two" / "wandb").glob("offline-run-*"))) == 1  # rank 0's run only
    one, two = weights(tmp_path / "runs" / "one"), weights(tmp_path / "runs" / "two")
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=0, atol=1e-5, msg=name)
    moved = weights(tmp_path / "runs" / "one")["encoder.layers.0.attention.qkv.weight"]
    assert moved.std() > 0  # sanity: trained weights, not an empty state


def test_unreachable_wandb_server_falls_back_offline_quickly(tiny_overrides: list[str], tmp_path: Path) -> None:
    overrides = offline_wandb(tiny_overrides)[:-1] + ["run.name=w"]
    env = {"WANDB_MODE": "", "WANDB_API_KEY": "x" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9"}
    start = time.time()
    proc = subprocess.run([sys.executable, "train.py", *overrides, "logger.wandb.mode=online"], cwd=REPO,
                          capture_output=True, text=True, timeout=240, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert time.time() - start < 120 and "offline" in proc.stderr
    summary = json.loads((tmp_path / "runs" / "w" / "summary.json").read_text())
    assert summary["wandb"]["mode"] == "offline" and summary["status"] == "finished"


def test_rerun_into_a_finished_run_dir_is_refused(tiny_overrides: list[str], tmp_path: Path) -> None:
    train(tiny_overrides + ["run.name=same"])
    proc = subprocess.run([sys.executable, "train.py", *tiny_overrides, "run.name=same"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "run.resume=auto" in proc.stderr.strip().splitlines()[-1]


def test_ctrl_c_saves_checkpoint_and_resume_finishes(tiny_overrides: list[str], tmp_path: Path) -> None:
    overrides = tiny_overrides + ["run.name=int", "trainer.max_steps=300", "trainer.checkpoint_every_n_steps=5",
                                  "trainer.val_check_interval=50", "eval.probes=false"]
    proc = subprocess.Popen([sys.executable, "train.py", *overrides], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "WANDB_MODE": "offline"})
    ckpt = tmp_path / "runs" / "int" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 180
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    summary = json.loads((tmp_path / "runs" / "int" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "run.resume=auto" in stderr
    stopped_at = torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]
    assert 5 <= stopped_at < 300
    train(overrides + ["run.resume=auto"])
    summary = json.loads((tmp_path / "runs" / "int" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["global_step"] == 300


def test_bf16_mixed_precision_trains_on_cpu(tiny_overrides: list[str], tmp_path: Path) -> None:
    train(tiny_overrides + ["run.name=bf16", "trainer.precision=bf16-mixed", "eval.probes=false"])
    summary = json.loads((tmp_path / "runs" / "bf16" / "summary.json").read_text())
    assert summary["status"] == "finished" and 0 < summary["metrics"]["train/loss"] < 20
