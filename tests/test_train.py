"""train.py end to end: run record, cache reuse, resume, DDP equivalence, W&B fallback."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO, call_main, free_port


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
    first = train(tiny_overrides + ["run.name=a", "data.valid_fraction=0.1"])  # 6 held-out documents: probes run
    run_dir = tmp_path / "runs" / "a"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["global_step"] == 4 and summary["tokens_seen"] > 0
    probe_keys = {f"probe/{t}_{k}" for t in ("nsp", "sop") for k in ("acc", "acc_ci95", "n")}  # never without interval
    assert {"val/loss", "val/mlm_acc", "val/perplexity", *probe_keys} <= set(summary["metrics"])
    header = (run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"step", "tokens_seen", "train/loss", "train/lr", "val/loss"} <= set(header)
    assert (run_dir / "config.yaml").read_text().count("max_steps: 4") == 1
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "training wordpiece tokenizer" in first.stderr and "tokenizing" in first.stderr
    second = train(tiny_overrides + ["run.name=b", "data.valid_fraction=0.1"])
    assert "reusing tokenizer" in second.stderr and "reusing tokenized corpus" in second.stderr
    assert "training wordpiece tokenizer" not in second.stderr


def interrupted(kind: str, step: int, overrides: list[str]) -> subprocess.CompletedProcess:
    """Run tests/signal_at_step.py in its own process group: KILL (SIGKILL, all ranks) or INT (Ctrl-C)."""
    return subprocess.run([sys.executable, "tests/signal_at_step.py", kind, str(step), *overrides], cwd=REPO,
                          capture_output=True, text=True, timeout=300, start_new_session=True,
                          env={**os.environ, "WANDB_MODE": "offline"})


def metric_rows(run_dir: Path) -> list[tuple[str, ...]]:
    """(step, kind of row) per metrics.csv row: a duplicated or missing step shows up here."""
    import csv

    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    return [(r["step"], "train" if r.get("train/loss") else "val") for r in rows]


EXACT_RESUME = {
    "dynamic": [],
    "static": ["masking.mode=static", "masking.dupe_factor=2"],
    "nsp": ["objective.sentence=nsp"],
    "ddp": ["trainer.devices=2", "trainer.strategy=ddp", "trainer.accelerator=cpu", "trainer.batch_size=4"],
}


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(EXACT_RESUME))
def test_kill_9_then_resume_equals_an_uninterrupted_run(tiny_overrides: list[str], tmp_path: Path,
                                                         variant: str) -> None:
    """SIGKILL after step 5 (checkpoint at 4), resume: same weights (1e-6), tokens_seen and metric rows as a
    run never interrupted; dropout stays on (its draws are a function of seed, step and rank)."""
    overrides = tiny_overrides + EXACT_RESUME[variant] + [
        "trainer.max_steps=7", "trainer.checkpoint_every_n_steps=2", "trainer.val_check_interval=2",
        "eval.probes=false", "data.max_documents=30"]
    train(overrides + ["run.name=whole"])
    killed = interrupted("KILL", 5, overrides + ["run.name=cut"])
    assert killed.returncode == -9, killed.stderr[-2000:]
    cut = tmp_path / "runs" / "cut"
    assert torch.load(cut / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] == 4
    train(overrides + ["run.name=cut", "run.resume=auto"])
    whole = tmp_path / "runs" / "whole"
    one, two = weights(whole), weights(cut)
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=0, atol=1e-6, msg=name)
    summaries = [json.loads((d / "summary.json").read_text()) for d in (whole, cut)]
    assert summaries[0]["tokens_seen"] == summaries[1]["tokens_seen"] > 0
    assert summaries[0]["metrics"]["eval/mlm_loss"] == summaries[1]["metrics"]["eval/mlm_loss"]
    assert metric_rows(cut) == metric_rows(whole)


def test_resume_guards(tiny_overrides: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lightning_bert.cli import train_main

    overrides = tiny_overrides + ["run.name=g", "eval.probes=false"]
    train(overrides)
    for change in (["trainer.max_steps=9"], ["objective.sentence=nsp"]):  # refused before training: in-process
        code, err = call_main(capsys, train_main, [*overrides, *change, "run.resume=auto"])
        key = change[0].split("=")[0]
        assert code == 2 and len(err.strip().splitlines()) == 1, err[-2000:]
        assert key in err and "run.resume_force=true" in err
    forced = train(overrides + ["trainer.max_steps=6", "run.resume=auto", "run.resume_force=true"])
    assert json.loads((tmp_path / "runs" / "g" / "summary.json").read_text())["global_step"] == 6, forced.stderr
    # resume=auto without run.name continues the newest run of the same experiment only
    other = [o for o in tiny_overrides] + ["experiment=roberta", "eval.probes=false", "run.resume=auto"]
    train(other)
    assert [p.name.split("-")[0] for p in (tmp_path / "runs").iterdir() if p.name != "g"] == ["roberta"]


def test_nonfinite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_overrides: list[str],
                                                                         tmp_path: Path) -> None:
    """A NaN injected into the embeddings at step 3 (after the step-2 checkpoint): the run stops at step 3
    with one line naming the loss; summary 'diverged'; the checkpoint still holds step 2's finite weights."""
    overrides = tiny_overrides + ["run.name=nan", "trainer.max_steps=6", "trainer.checkpoint_every_n_steps=2",
                                  "eval.probes=false"]
    proc = subprocess.run([sys.executable, "tests/nan_at_step.py", "3", *overrides], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "WANDB_MODE": "offline"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: diverged at step 3: train/mlm_loss")
    run_dir = tmp_path / "runs" / "nan"
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "diverged"
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2 and all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
    skipped = subprocess.run([sys.executable, "tests/nan_at_step.py", "3", *overrides[:-4], "run.name=skip",
                              "trainer.max_steps=6", "trainer.skip_nonfinite=1", "eval.probes=false"],
                             cwd=REPO, capture_output=True, text=True, timeout=300)
    assert skipped.returncode == 0, skipped.stderr[-2000:]
    assert json.loads((tmp_path / "runs" / "skip" / "summary.json").read_text())["global_step"] == 6


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
    """Ctrl-C at step 7 (signalled by the run itself at that step, so no race against a timer)."""
    overrides = tiny_overrides + ["run.name=int", "trainer.max_steps=12", "trainer.checkpoint_every_n_steps=5",
                                  "trainer.val_check_interval=50", "eval.probes=false"]
    proc = interrupted("INT", 7, overrides)
    summary = json.loads((tmp_path / "runs" / "int" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "run.resume=auto" in proc.stderr, proc.stderr[-2000:]
    ckpt = tmp_path / "runs" / "int" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] == 7  # saved on the way out
    train(overrides + ["run.resume=auto"])
    summary = json.loads((tmp_path / "runs" / "int" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["global_step"] == 12


def test_bf16_mixed_precision_trains_on_cpu_within_epsilon_of_fp32(tiny_overrides: list[str], tmp_path: Path) -> None:
    """Same seed, same batches, no dropout: bf16-mixed follows fp32 to BF16_EPS in every logged training loss
    and in the final canonical loss (bf16 keeps 8 mantissa bits; measured: at most 1.2e-4 nats over 3 steps)."""
    BF16_EPS = 0.005  # nats, 0.07% of the initial loss ln(1000) = 6.9
    exact = tiny_overrides + ["eval.probes=false", "model.dropout=0", "model.attention_dropout=0", "trainer.max_steps=3"]
    losses = {}
    for precision in ("32-true", "bf16-mixed"):
        train(exact + [f"run.name={precision}", f"trainer.precision={precision}"])
        run_dir = tmp_path / "runs" / precision
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["global_step"] == 3
        with open(run_dir / "metrics.csv", newline="") as fh:
            steps = [float(r["train/loss"]) for r in csv.DictReader(fh) if r.get("train/loss")]
        losses[precision] = steps + [summary["metrics"]["eval/mlm_loss"]]
    assert len(losses["32-true"]) == len(losses["bf16-mixed"]) == 4
    for fp32, bf16 in zip(losses["32-true"], losses["bf16-mixed"]):
        assert abs(bf16 - fp32) < BF16_EPS, losses


@pytest.mark.slow
def test_gradient_accumulation_equals_the_large_batch(tiny_overrides: list[str], tmp_path: Path) -> None:
    """k micro-batches of b train exactly like one batch of k*b (the loss is normalised over the whole
    step's predictions), alone and under DDP: 1x8, 4x2 accumulated, and 2 ranks x (2x2 accumulated)."""
    exact = tiny_overrides + ["model.dropout=0", "model.attention_dropout=0", "eval.probes=false",
                              "trainer.accelerator=cpu", "trainer.max_steps=3", "objective.sentence=nsp"]
    train(exact + ["run.name=big", "trainer.batch_size=8"])
    train(exact + ["run.name=acc", "trainer.batch_size=2", "trainer.accumulate_grad_batches=4"])
    train(exact + ["run.name=ddp_acc", "trainer.batch_size=2", "trainer.accumulate_grad_batches=2",
                   "trainer.devices=2", "trainer.strategy=ddp"])
    big = weights(tmp_path / "runs" / "big")
    for other in ("acc", "ddp_acc"):
        theirs = weights(tmp_path / "runs" / other)
        for name in big:
            torch.testing.assert_close(theirs[name], big[name], rtol=0, atol=1e-5, msg=f"{other}: {name}")
    tokens = {r: json.loads((tmp_path / "runs" / r / "summary.json").read_text())["tokens_seen"]
              for r in ("big", "acc", "ddp_acc")}
    assert len(set(tokens.values())) == 1, tokens


def test_short_run_validates_its_final_weights(tiny_overrides: list[str], tmp_path: Path) -> None:
    """A 3-step run with validation every 100 steps still reports val/* and eval/* of step 3's weights."""
    train(tiny_overrides + ["run.name=short", "trainer.max_steps=3", "trainer.val_check_interval=100",
                            "eval.probes=false"])
    run_dir = tmp_path / "runs" / "short"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert {"val/loss", "val/mlm_loss", "eval/mlm_loss", "eval/mlm_acc", "eval/mlm_loss_per_char"} <= set(
        summary["metrics"])
    rows = metric_rows(run_dir)
    assert rows[-1] == ("2", "val") and sum(kind == "val" for _, kind in rows) == 1
    # the summary's eval/mlm_loss is the final weights' loss on the canonical set, recomputed here
    from lightning_bert.config import load
    from lightning_bert.data.datamodule import PretrainDataModule
    from lightning_bert.train.pretrain import PretrainModule

    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    module = PretrainModule(ckpt["hyper_parameters"]["config"], ckpt["hyper_parameters"]["vocab_size"])
    module.load_state_dict(ckpt["state_dict"])
    module.eval()
    data = PretrainDataModule(load(tiny_overrides))
    data.setup()
    loss_sum, count = 0.0, 0
    with torch.no_grad():
        for batch in data.canonical_loader():
            out = module.objectives["mlm"](module(batch), batch)
            loss_sum, count = loss_sum + float(out.loss_sum), count + len(out.target)
    assert abs(loss_sum / count - summary["metrics"]["eval/mlm_loss"]) < 1e-4


@pytest.mark.slow
def test_torchrun_two_nodes_agree_and_match_one_process(tiny_overrides: list[str], tmp_path: Path) -> None:
    """torchrun --nnodes=2 --nproc_per_node=1 on loopback, no run.name: both processes use one run
    directory, the caches are built once (by global rank 0), and the weights equal one process with the
    same global batch."""
    exact = tiny_overrides + ["model.dropout=0", "model.attention_dropout=0", "eval.probes=false",
                              "trainer.accelerator=cpu", "trainer.max_steps=3"]
    nodes = [exact + ["trainer.batch_size=4", "trainer.num_nodes=2", "trainer.strategy=ddp"]]
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
                               f"--node_rank={rank}", "--master_addr=127.0.0.1", f"--master_port={port}",
                               "train.py", *nodes[0]], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs[0][1][-2000:] + outputs[1][1][-2000:]
    runs = [d for d in (tmp_path / "runs").iterdir() if d.name != "one"]
    assert len(runs) == 1, runs  # one directory for both nodes
    logs = outputs[0][1] + outputs[1][1]
    assert logs.count("training wordpiece tokenizer") == 1 and logs.count("reusing tokenized corpus") == 1
    train(exact + ["run.name=one", "trainer.batch_size=8"])  # the same tokenizer (WordPiece training is not
    one, two = weights(tmp_path / "runs" / "one"), weights(runs[0])  # reproducible across processes)
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=0, atol=1e-5, msg=name)


@pytest.mark.slow
def test_streaming_backend_trains_on_two_ranks_and_resumes_exactly(tiny_overrides: list[str], tmp_path: Path,
                                                                    shared_data: Path) -> None:
    """data.backend=hf_streaming through train.py: 4 local JSONL shards stand in for a bucket, 2 DDP
    ranks split them, validation and the canonical set come from data.valid_path; killed after step 5
    and resumed, the run equals an uninterrupted one (the stream's position is in the checkpoint)."""
    from lightning_bert.data.corpus import read_documents

    docs = read_documents([str(shared_data / "wikipedia-en" / "valid.txt")])[:60]
    shards = []
    for i in range(4):
        shards.append(tmp_path / f"shard{i}.jsonl")
        shards[-1].write_text("".join(json.dumps({"text": d}) + "\n" for d in docs[i::4]))
    overrides = [o for o in tiny_overrides if not o.startswith(("data.path", "data.max_documents"))] + [
        "data.backend=hf_streaming", f"data.path=[{','.join(map(str, shards))}]",
        f"data.valid_path={shared_data / 'wikitext-2-raw' / 'wiki.valid.raw'}", "trainer.devices=2",
        "trainer.strategy=ddp", "trainer.accelerator=cpu", "trainer.batch_size=4", "trainer.max_steps=7",
        "trainer.checkpoint_every_n_steps=2", "eval.probes=false"]
    train(overrides + ["run.name=whole"])
    killed = interrupted("KILL", 5, overrides + ["run.name=cut"])
    assert killed.returncode == -9, killed.stderr[-2000:]
    train(overrides + ["run.name=cut", "run.resume=auto"])
    one, two = weights(tmp_path / "runs" / "whole"), weights(tmp_path / "runs" / "cut")
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=0, atol=1e-6, msg=name)
    summary = json.loads((tmp_path / "runs" / "cut" / "summary.json").read_text())
    assert summary["tokens_seen"] == json.loads((tmp_path / "runs" / "whole" / "summary.json").read_text())[
        "tokens_seen"] and "eval/mlm_loss" in summary["metrics"]
