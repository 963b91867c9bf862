"""The ablation report: run records -> table, plots, HTML; end to end from an offline 2x2 grid sweep."""
from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import matplotlib.image
import pytest
import yaml

from lightning_bert import report, sweep

FAKE = Path(__file__).with_name("fake_train.py")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def table(md: str) -> dict[str, dict[str, str]]:
    """Markdown table rows keyed by variant, cells keyed by column header."""
    lines = [line for line in md.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]
    return {row["variant"]: row for row in rows}


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert matplotlib.image.imread(path).shape[0] > 100


@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2x2 grid (sentence task x seed) of fake trials, run offline, one of them failed on purpose."""
    tmp = tmp_path_factory.mktemp("sweep")
    spec = {"program": str(FAKE), "method": "grid", "metric": {"name": "val/mlm_loss", "goal": "minimize"},
            "parameters": {"objective.sentence": {"values": ["nsp", "sop"]}, "run.seed": {"values": [1, 2, 3]},
                           "trainer.batch_size": {"value": 2}, "data.max_seq_length": {"value": 32}},
            "command": ["${env}", "${interpreter}", "${program}", "${args_no_hyphens}"]}
    (tmp / "sentence.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FAKE_TRAIN_CRASH", "run.seed=3")  # 2x2 finished + 2 failed trials
        assert sweep.main([str(tmp / "sentence.yaml"), "--dir", str(tmp / "out")]) == 0
    return tmp / "out"


def test_end_to_end_table_matches_run_records(grid_sweep: Path, tmp_path: Path) -> None:
    assert report.main([str(grid_sweep), "--out", str(tmp_path / "rep")]) == 0
    rows = table((tmp_path / "rep" / "report.md").read_text())
    assert list(rows) == ["objective.sentence=nsp", "objective.sentence=sop"]
    trials = json.loads((grid_sweep / sweep.STATE_FILE).read_text())["trials"]
    summaries = {t["id"]: json.loads((grid_sweep / "runs" / t["id"] / "summary.json").read_text())
                 for t in trials if t["state"] == "finished"}
    assert len(summaries) == 4
    for variant, row in rows.items():
        mine = [summaries[t["id"]] for t in trials
                if t["id"] in summaries and f"objective.sentence={t['params']['objective.sentence']}" == variant]
        assert row["seeds"] == "2" and len(mine) == 2
        for metric in ("val/loss", "val/mlm_loss", "val/mlm_acc", "probe/nsp_acc", "glue/sst2/acc"):
            values = [s["metrics"][metric] for s in mine]
            mean, std = (float(x) for x in row[metric].split(" ± "))
            assert mean == pytest.approx(statistics.fmean(values), rel=1e-3)
            assert std == pytest.approx(statistics.stdev(values), rel=1e-2, abs=1e-4)
        assert float(row["tokens seen"]) == statistics.fmean(s["tokens_seen"] for s in mine)
        assert float(row["wall time (s)"]) == pytest.approx(statistics.fmean(s["wall_time_s"] for s in mine), rel=1e-3)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "4 finished runs in 2 variants. 2 runs not finished are left out of the table (2 failed)." in md
    for name in ("val_mlm_loss_vs_tokens", "final_metrics", "probe_accuracy", "downstream"):
        assert_png(tmp_path / "rep" / f"{name}.png")
        assert f"({name}.png)" in md
    page = (tmp_path / "rep" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "<td>objective.sentence=nsp</td>" in page


def record(name: str, seed: int, loss: float, status: str = "finished", **params: object) -> report.RunRecord:
    config = {"run.seed": seed, "run.name": name, "objective.sentence": params.get("objective.sentence", "nsp")}
    history = [{"step": s, "tokens_seen": 100.0 * s, "val/mlm_loss": loss + 10 - s} for s in range(1, 11, 3)]
    return report.RunRecord(name=name, status=status, params={**params, "run.seed": seed} if params else {},
                            config=config, metrics={"val/mlm_loss": loss}, tokens_seen=1000, wall_time_s=2.0,
                            history=history)


def test_variants_fall_back_to_config_differences() -> None:
    runs = [record("a", 1, 3.0), record("b", 2, 4.0), record("c", 1, 5.0), record("d", 2, 6.0)]
    runs[2].config["objective.sentence"] = runs[3].config["objective.sentence"] = "sop"
    groups = report.group_variants(runs)
    assert list(groups) == ["objective.sentence=nsp", "objective.sentence=sop"]
    header, rows = report.table_rows(groups)
    assert header == ["variant", "seeds", "val/mlm_loss", "tokens seen", "wall time (s)"]
    assert rows[0] == ["objective.sentence=nsp", "2", "3.5 ± 0.7071", "1000", "2"]


def test_unfinished_runs_are_counted_not_tabled_and_plots_handle_uneven_curves(tmp_path: Path) -> None:
    runs = [record("a", 1, 3.0, **{"masking.mode": "static"}), record("b", 2, 4.0, **{"masking.mode": "static"}),
            record("c", 1, 5.0, **{"masking.mode": "dynamic"}),
            record("d", 2, 9.0, status="crashed", **{"masking.mode": "dynamic"})]
    runs[1].history = runs[1].history[:2]  # a shorter curve: band only where both seeds have points
    page = report.write_report(runs, tmp_path, "t")
    md = (tmp_path / "report.md").read_text()
    assert "3 finished runs in 2 variants. 1 runs not finished are left out of the table (1 crashed)." in md
    assert table(md)["masking.mode=dynamic"]["seeds"] == "1"
    assert table(md)["masking.mode=dynamic"]["val/mlm_loss"] == "5 ± 0"
    assert_png(tmp_path / "val_mlm_loss_vs_tokens.png")
    assert not (tmp_path / "probe_accuracy.png").exists()  # no probe metrics, no plot
    assert page.read_text().count("data:image/png;base64,") == 2


def test_wandb_summary_forms_are_split_into_final_and_best() -> None:
    final, best = report._split_summary({"_runtime": 3, "val/loss": 2.0, "best/val/loss": 1.5,
                                         "val/mlm_loss": {"min": 1.0, "last": 1.2}, "tokens_seen": 64,
                                         "trainer/global_step": 9, "epoch": 0})
    assert final == {"val/loss": 2.0, "val/mlm_loss": 1.2}
    assert best == {"val/loss": 1.5, "val/mlm_loss": 1.0}


def test_run_dir_without_summary_is_not_finished(tmp_path: Path) -> None:
    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "summary.json").write_text('{"status": "failed", "metrics": {}}')
    rec = report.read_run_dir(tmp_path / "r1")
    assert rec.status == "failed" and rec.config == {} and rec.history == []
    assert report.read_local(tmp_path)[0].name == "r1"


@pytest.mark.parametrize("source", ["no/such/dir/here", "not-a-path"])
def test_bad_source_exits_2(source: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert report.main([source]) == 2
    assert re.match(r"error: .*(neither a directory|cannot read W&B)", capsys.readouterr().err)


def test_empty_directory_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report.main([str(tmp_path)]) == 2
    assert "no run records" in capsys.readouterr().err


@pytest.mark.slow
def test_real_train_grid_sweep_and_report(tmp_path: Path, tiny_overrides: list[str]) -> None:
    """train.py itself under the controller: a 2x2 grid (sentence task x seed) of tiny runs, then the report."""
    constants = {k: {"value": v} for k, v in (o.split("=", 1) for o in tiny_overrides)}
    spec = {"program": "train.py", "method": "grid", "metric": {"name": "val/mlm_loss", "goal": "minimize"},
            "parameters": {"objective.sentence": {"values": ["nsp", "none"]}, "run.seed": {"values": [1, 2]},
                           **constants},
            "command": ["${env}", "${interpreter}", "${program}", "${args_no_hyphens}"]}
    (tmp_path / "real.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    lines: list[str] = []
    state = sweep.run_sweep(tmp_path / "real.yaml", out_dir=tmp_path / "out", echo=lines.append)
    assert [t["state"] for t in state["trials"]] == ["finished"] * 4, lines
    assert sweep.resolve_program("train.py", tmp_path / "real.yaml") == FAKE.parent.parent / "train.py"
    assert report.main([str(tmp_path / "out"), "--out", str(tmp_path / "rep")]) == 0
    rows = table((tmp_path / "rep" / "report.md").read_text())
    assert list(rows) == ["objective.sentence=nsp", "objective.sentence=none"]
    for variant, row in rows.items():
        runs = [t for t in state["trials"] if variant.endswith("=" + t["params"]["objective.sentence"])]
        values = [json.loads((tmp_path / "out" / "runs" / t["id"] / "summary.json").read_text())["metrics"]
                  ["val/mlm_loss"] for t in runs]
        assert row["seeds"] == "2"
        assert float(row["val/mlm_loss"].split(" ± ")[0]) == pytest.approx(statistics.fmean(values), rel=1e-3)
    assert_png(tmp_path / "rep" / "val_mlm_loss_vs_tokens.png")
