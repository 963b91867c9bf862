"""A trial that train.py stopped for preemption (exit 143 SIGTERM / 138 SIGUSR1, checkpoint saved) stays
resumable: the sweep records it `interrupted`, not failed, and the next controller run continues it with
run.resume=auto in the same run directory (issue 21)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from lightning_bert.analysis import sweep

# A stand-in for train.py: exits like a preempted run the first time it sees run.seed=1, then finishes.
PROGRAM = '''
import json, os, sys
from pathlib import Path
run_dir = Path(os.environ["LIGHTNING_BERT_RUN_DIR"]); run_dir.mkdir(parents=True, exist_ok=True)
with open(os.environ["CALLS"], "a") as fh:
    fh.write(json.dumps({"args": sys.argv[1:], "run_dir": str(run_dir)}) + "\\n")
preempt = "run.seed=1" in sys.argv and "run.resume=auto" not in sys.argv
status = "interrupted" if preempt else "finished"
(run_dir / "summary.json").write_text(json.dumps({"status": status, "metrics": {"val/loss": 1.0}}))
sys.exit(int(os.environ["EXIT"]) if preempt else 0)
'''


@pytest.mark.parametrize("code", [143, 138])
def test_preempted_trial_is_resumed_by_the_next_controller_run(code: int, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    program = tmp_path / "train_stub.py"
    program.write_text(PROGRAM)
    monkeypatch.setenv("CALLS", str(tmp_path / "calls.jsonl"))
    monkeypatch.setenv("EXIT", str(code))
    spec = {"program": str(program), "method": "grid", "metric": {"name": "val/loss", "goal": "minimize"},
            "parameters": {"run.seed": {"values": [1, 2]}},
            "command": ["${env}", "${interpreter}", "${program}", "${args_no_hyphens}"]}
    path = tmp_path / "abl.yaml"
    path.write_text(yaml.safe_dump(spec))
    state = sweep.run_sweep(path, out_dir=tmp_path / "out")
    assert [(t["state"], t["exit_code"]) for t in state["trials"]] == [(sweep.INTERRUPTED, code), ("finished", 0)]
    state = sweep.run_sweep(path, out_dir=tmp_path / "out")
    assert [t["state"] for t in state["trials"]] == ["finished", "finished"] and state["trials"][0]["resumed"] == 1
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    first = state["trials"][0]["id"]
    assert [(c["args"], Path(c["run_dir"]).name) for c in calls] == [
        (["run.seed=1"], first), (["run.seed=2"], state["trials"][1]["id"]),
        (["run.seed=1", "run.resume=auto"], first)]  # continued in its own run directory


def test_wandb_agent_requeue_resumes_from_the_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`wandb agent` reruns a preempted (marked preempting, exit 143) run with the same run id: that run's
    directory is found again and its checkpoint continued."""
    from lightning_bert.config import load
    from lightning_bert.train.fit import resolve_run_dir, resume_requeued

    monkeypatch.delenv("LIGHTNING_BERT_RUN_DIR", raising=False)
    monkeypatch.setenv("WANDB_SWEEP_ID", "sw1")
    monkeypatch.setenv("WANDB_RUN_ID", "abc")
    cfg = load([f"run.output_dir={tmp_path}"])
    run_dir = resolve_run_dir(cfg)
    assert run_dir == tmp_path / "sweep-sw1-abc"
    resume_requeued(cfg, run_dir)
    assert cfg.run.resume == "none"  # a first start: nothing to continue
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"")
    resume_requeued(cfg, run_dir)
    assert cfg.run.resume == "auto"
