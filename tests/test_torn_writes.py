"""Readers tolerate writes cut off by a kill or a full disk (issue 21): metrics.csv and the sweep state
are read up to their last complete record with one notice; `report`, a resumed run's metrics writer and
a restarted sweep carry on instead of crashing."""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest
import yaml

from lightning_bert.analysis import sweep
from lightning_bert.analysis.runs import read_run_dir, read_state
from conftest import call_main

FAKE = Path(__file__).with_name("fake_train.py")
HEADER = ["step", "tokens_seen", "train/loss", "val/mlm_loss"]


def metrics_file(run_dir: Path, rows: int = 4) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "metrics.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADER)
        for step in range(1, rows + 1):
            writer.writerow([step, step * 64, 5.0 - step / 10, "" if step % 2 else 4.5 - step / 10])
    return path


def cut_mid_row(path: Path) -> None:
    """Drop the end of the last row, as a kill in the middle of its write does."""
    text = path.read_text()
    path.write_text(text[: text.rstrip("\n").rfind(",") + 2])


def test_report_reads_a_metrics_csv_cut_mid_row(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                caplog: pytest.LogCaptureFixture) -> None:
    from lightning_bert.analysis.report import main

    run_dir = tmp_path / "runs" / "r1"
    cut_mid_row(metrics_file(run_dir))
    (run_dir / "summary.json").write_text(json.dumps({"status": "finished", "metrics": {"val/mlm_loss": 4.1}}))
    with caplog.at_level(logging.WARNING, logger="lightning_bert"):
        assert [row["step"] for row in read_run_dir(run_dir).history] == [1.0, 2.0, 3.0]
    assert sum("cut off" in r.getMessage() for r in caplog.records) == 1  # one notice
    code, err = call_main(capsys, main, [str(tmp_path / "runs"), "--out", str(tmp_path / "report")])
    assert code == 0, err
    assert (tmp_path / "report" / "index.html").is_file() or any((tmp_path / "report").iterdir())


def test_resumed_writer_appends_after_the_complete_rows(tmp_path: Path) -> None:
    from lightning_bert.train.runrecord import ResumableCSVLogger, trim_metrics

    path = metrics_file(tmp_path)
    cut_mid_row(path)
    trim_metrics(path, from_step=5)  # a resume from step 5: the torn row of step 4 is not the resumed part
    logger = ResumableCSVLogger(tmp_path)
    logger.log_metrics({"train/loss": 1.5, "tokens_seen": 320.0}, step=5)
    logger.save()
    logger.log_metrics({"train/loss": 1.25, "lr": 0.001}, step=6)  # a new column: the file is replaced whole
    logger.save()
    rows = list(csv.DictReader(path.open(newline="")))
    assert [(r["step"], r["train/loss"]) for r in rows] == [("1", "4.9"), ("2", "4.8"), ("3", "4.7"), ("5", "1.5"),
                                                            ("6", "1.25")]
    assert rows[-1]["lr"] == "0.001" and path.read_text().endswith("\n")
    assert not list(tmp_path.glob(".metrics.csv.tmp-*"))


def write_sweep(tmp_path: Path) -> Path:
    spec = {"program": str(FAKE), "method": "grid", "metric": {"name": "val/mlm_loss", "goal": "minimize"},
            "parameters": {"run.seed": {"values": [1, 2, 3]}, "trainer.batch_size": {"value": 2}},
            "command": ["${env}", "${interpreter}", "${program}", "${args_no_hyphens}"]}
    path = tmp_path / "abl.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_sweep_state_cut_mid_write_resumes_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_bert.analysis.report import main

    monkeypatch.delenv("WANDB_MODE", raising=False)
    path, out = write_sweep(tmp_path), tmp_path / "out"
    state = sweep.run_sweep(path, count=2, out_dir=out)
    state_file = out / sweep.STATE_FILE
    text = state_file.read_text()
    second = text.index('"index": 2')
    state_file.write_text(text[: second + 20])  # cut inside the second trial
    recovered = read_state(state_file)
    assert [t["id"] for t in recovered["trials"]] == [state["trials"][0]["id"]]
    code, err = call_main(capsys, main, [str(out), "--out", str(tmp_path / "report")])
    assert code == 0, err
    lines: list[str] = []
    state = sweep.run_sweep(path, out_dir=out, echo=lines.append)  # resume: the grid's other points run
    assert [t["state"] for t in state["trials"]] == ["finished"] * 3
    assert sorted(t["params"]["run.seed"] for t in state["trials"]) == [1, 2, 3]
    json.loads(state_file.read_text())  # replaced whole
    state_file.write_text('{"name": "abl", "meth')  # cut before its trials: one line, not a traceback
    with pytest.raises(sweep.UserError, match="cut off before its trials"):
        sweep.run_sweep(path, out_dir=out)
