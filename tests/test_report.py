"""The ablation report: run records -> table, plots, HTML; end to end from an offline 2x2 grid sweep."""
from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import matplotlib.image
import pytest
import yaml

from lightning_bert.analysis import render, report, stats, sweep, tables
from lightning_bert.analysis import runs as run_records

FAKE = Path(__file__).with_name("fake_train.py")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


MAIN, DIFFERENCES, OTHER = "", "## Differences between variants", "## Other held-out metrics"


def table(md: str, section: str = MAIN) -> dict[str, dict[str, str]]:
    """The first Markdown table after the heading `section` (the main table by default): rows keyed by their
    first cell, cells keyed by column header (a probe header's "(n=..., 95% CI ...)" note dropped)."""
    text = md.split(section, 1)[1] if section else md
    lines = []
    for line in text.splitlines():
        if line.startswith("|"):
            lines.append(line)
        elif lines:
            break
    header = [re.sub(r" \(n=.*\)$", "", c.strip()) for c in lines[0].strip("|").split("|")]
    rows = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]
    return {row[header[0]]: row for row in rows}


def mean_std_cell(text: str) -> tuple[float, float, int]:
    """'3.523 ± 0.010 †' -> (3.523, 0.010, 3 decimals)."""
    mean, std = text.split(" ± ")
    std = std.split()[0]
    return float(mean), float(std), len(std.split(".")[1]) if "." in std else 0


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
    md = (tmp_path / "rep" / "report.md").read_text()
    rows = table(md)
    assert list(rows) == ["objective.sentence=nsp", "objective.sentence=sop"]
    header = list(rows["objective.sentence=nsp"])
    assert header[:5] == ["variant", "seeds", "eval/mlm_loss", "eval/mlm_loss_per_char", "eval/mlm_acc"]  # canonical first
    assert header[-3:] == ["tokens seen", "steps", "wall time (s)"]
    trials = json.loads((grid_sweep / sweep.STATE_FILE).read_text())["trials"]
    summaries = {t["id"]: json.loads((grid_sweep / "runs" / t["id"] / "summary.json").read_text())
                 for t in trials if t["state"] == "finished"}
    assert len(summaries) == 4
    for variant, row in rows.items():
        mine = [summaries[t["id"]] for t in trials
                if t["id"] in summaries and f"objective.sentence={t['params']['objective.sentence']}" == variant]
        assert row["seeds"] == "2" and len(mine) == 2
        other = table(md, OTHER)[variant]  # the other held-out metrics
        for metric in ("eval/mlm_loss", "eval/mlm_loss_per_char", "eval/mlm_acc", "probe/nsp_acc", "val/loss",
                       "val/mlm_loss", "glue/sst2/acc"):
            values = [s["metrics"][metric] for s in mine]
            mean, std, places = mean_std_cell(row.get(metric) or other[metric])
            half_unit = 0.5 * 10 ** -places + 1e-12  # rounded to the std's last significant place
            assert abs(mean - statistics.fmean(values)) <= half_unit and abs(std - statistics.stdev(values)) <= half_unit
            assert 1 <= float(f"{std:.{places}f}".replace(".", "").lstrip("0") or 0) <= 99  # 1-2 significant digits
        assert float(row["tokens seen"]) == statistics.fmean(s["tokens_seen"] for s in mine)
        assert float(row["steps"]) == 4
        assert float(row["wall time (s)"]) == pytest.approx(statistics.fmean(s["wall_time_s"] for s in mine), abs=0.5)
    verdicts = table(md, DIFFERENCES)["objective.sentence=sop vs objective.sentence=nsp"]
    assert re.fullmatch(r"Δ [+-][\d.]+, p(=[\d.e-]+|<0\.001)", verdicts["eval/mlm_loss"])  # fake variants differ
    assert "data.max_seq_length=32" in md and "trainer.batch_size=2" in md  # held constant, listed
    assert "run.seed=" not in md.split("## Settings held constant")[1].split("![")[0]
    assert "4 finished runs in 2 variants. 2 runs not finished are left out of the table (2 failed)." in md
    for name in ("mlm_loss_vs_tokens", "final_metrics", "probe_accuracy", "downstream"):
        assert_png(tmp_path / "rep" / f"{name}.png")
        assert matplotlib.image.imread(tmp_path / "rep" / f"{name}.png").shape[1] <= 1220  # fits a laptop window
        assert f"({name}.png)" in md
    page = (tmp_path / "rep" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "<th>variant (objective.sentence)</th>" in page
    assert "<td>nsp</td>" in page and "<td>sop vs nsp</td>" in page  # short labels: the table fits the page
    assert "img{max-width:100%" in page and "max-width:1220px" in page


def record(name: str, seed: int, loss: float, status: str = "finished", **params: object) -> run_records.RecordedRun:
    config = {"run.seed": seed, "run.name": name, "objective.sentence": params.get("objective.sentence", "nsp")}
    history = [{"step": s, "tokens_seen": 100.0 * s, "val/mlm_loss": loss + 10 - s} for s in range(1, 11, 3)]
    return run_records.RecordedRun(name=name, status=status, params={**params, "run.seed": seed} if params else {},
                            config=config, metrics={"val/mlm_loss": loss}, tokens_seen=1000, wall_time_s=2.0,
                            history=history)


def test_variants_fall_back_to_config_differences() -> None:
    runs = [record("a", 1, 3.0), record("b", 2, 4.0), record("c", 1, 5.0), record("d", 2, 6.0)]
    runs[2].config["objective.sentence"] = runs[3].config["objective.sentence"] = "sop"
    groups = tables.group_variants(runs)
    assert list(groups) == ["objective.sentence=nsp", "objective.sentence=sop"]
    header, rows = tables.table_rows(groups, headline=False)
    assert header == ["variant", "seeds", "val/mlm_loss"]
    assert rows[0] == ["objective.sentence=nsp", "2", "3.5 ± 0.7"]  # std 0.7071 -> one significant digit


def test_unfinished_runs_are_counted_not_tabled_and_plots_handle_uneven_curves(tmp_path: Path) -> None:
    runs = [record("a", 1, 3.0, **{"masking.mode": "static"}), record("b", 2, 4.0, **{"masking.mode": "static"}),
            record("c", 1, 5.0, **{"masking.mode": "dynamic"}),
            record("d", 2, 9.0, status="crashed", **{"masking.mode": "dynamic"})]
    runs[1].history = runs[1].history[:2]  # a shorter curve: band only where both seeds have points
    page = render.write_report(runs, tmp_path, "t")
    md = (tmp_path / "report.md").read_text()
    assert "3 finished runs in 2 variants. 1 runs not finished are left out of the table (1 crashed)." in md
    assert table(md)["masking.mode=dynamic"]["seeds"] == "1"
    assert table(md, OTHER)["masking.mode=dynamic"]["val/mlm_loss"] == "5 (1 seed)"
    assert_png(tmp_path / "mlm_loss_vs_tokens.png")
    assert not (tmp_path / "probe_accuracy.png").exists()  # no probe metrics, no plot
    assert page.read_text().count("data:image/png;base64,") == 2


def test_a_metric_equal_to_another_in_every_run_is_shown_once(tmp_path: Path) -> None:
    runs = [record("a", 1, 3.0, **{"masking.mode": "static"}), record("b", 1, 4.0, **{"masking.mode": "dynamic"})]
    for r, rho in zip(runs, (0.3, 0.5)):  # cosine ignores length: the _norm rows copy the plain ones
        r.metrics.update({"sts/mean/spearman": rho, "sts/mean_norm/spearman": rho, "val/loss": r.metrics["val/mlm_loss"]})
    runs[1].metrics["val/loss"] += 0.5  # equal in one run only: a number of its own
    render.write_report(runs, tmp_path, "t")
    md = (tmp_path / "report.md").read_text()
    other = table(md, OTHER)["masking.mode=dynamic"]
    assert "sts/mean/spearman" in other and "sts/mean_norm/spearman" not in other
    assert "val/loss" in other and "val/mlm_loss" in other
    assert "Shown once, equal in every run: sts/mean_norm/spearman = sts/mean/spearman." in md


def test_wandb_summary_forms_are_split_into_final_and_best() -> None:
    final, best = run_records._split_summary({"_runtime": 3, "val/loss": 2.0, "best/val/loss": 1.5,
                                         "val/mlm_loss": {"min": 1.0, "last": 1.2}, "tokens_seen": 64,
                                         "trainer/global_step": 9, "epoch": 0})
    assert final == {"val/loss": 2.0, "val/mlm_loss": 1.2}
    assert best == {"val/loss": 1.5, "val/mlm_loss": 1.0}


def test_run_dir_without_summary_is_not_finished(tmp_path: Path) -> None:
    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "summary.json").write_text('{"status": "failed", "metrics": {}}')
    rec = run_records.read_run_dir(tmp_path / "r1")
    assert rec.status == "failed" and rec.config == {} and rec.history == []
    assert run_records.read_local(tmp_path)[0].name == "r1"


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
    md = (tmp_path / "rep" / "report.md").read_text()
    rows = table(md)
    assert list(rows) == ["objective.sentence=nsp", "objective.sentence=none"]
    for variant, row in rows.items():
        runs = [t for t in state["trials"] if variant.endswith("=" + t["params"]["objective.sentence"])]
        summaries = [json.loads((tmp_path / "out" / "runs" / t["id"] / "summary.json").read_text()) for t in runs]
        assert row["seeds"] == "2" and float(row["steps"]) == 4
        for metric in ("eval/mlm_loss", "eval/mlm_loss_per_char"):  # the canonical set, final weights
            mean, std, places = mean_std_cell(row[metric])
            assert abs(mean - statistics.fmean(s["metrics"][metric] for s in summaries)) <= 0.5 * 10 ** -places + 1e-12
    assert_png(tmp_path / "rep" / "mlm_loss_vs_tokens.png")


@pytest.mark.parametrize("values, expected", [
    ([0.07476, 0.07410, 0.07540], "0.0748 ± 0.0007"),  # the "0.07476 ± 0.0006527"
    ([0.50, 0.61, 0.72], "0.61 ± 0.11"),  # a leading 1: two significant digits
    ([1000.0, 1500.0, 1800.0], "1400 ± 400"),  # spread in the hundreds: rounded to hundreds
    ([6.88, 6.88], "6.88 ± 0"),
    ([7.0512], "7.051 (1 seed)"),
])
def test_numbers_are_rounded_to_the_seed_spread(values: list[float], expected: str) -> None:
    assert stats.fmt_mean_std(values) == expected


def test_welch_p_value_matches_the_textbook_formula() -> None:
    from scipy.stats import t

    a, b = [7.05, 7.11, 6.98, 7.02], [6.88, 6.95, 6.91]
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    t_stat = (statistics.fmean(a) - statistics.fmean(b)) / (va + vb) ** 0.5
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))  # Welch-Satterthwaite
    assert stats.welch_p(a, b) == pytest.approx(2 * t.sf(abs(t_stat), df), rel=1e-9)
    assert stats.fmt_comparison(a, b).startswith("Δ -0.1") and "p=0.0" in stats.fmt_comparison(a, b)
    assert stats.fmt_comparison([3.0, 3.2, 3.1], [3.05, 3.25, 3.1]).startswith("within noise (p=0.")
    assert stats.welch_p([1.0], [2.0, 3.0]) is None and "no test" in stats.fmt_comparison([1.0], [2.0, 3.0])


def probe_record(name: str, seed: int, sop: float, ci: float, **params: object) -> run_records.RecordedRun:
    rec = record(name, seed, 3.0, **params)
    rec.metrics.update({"eval/mlm_loss": 3.0 + seed / 100, "probe/sop_acc": sop, "probe/sop_acc_ci95": ci,
                        "probe/sop_n": 1500.0})
    return rec


def test_probe_accuracies_indistinguishable_from_chance_are_flagged(tmp_path: Path) -> None:
    runs = [probe_record(f"n{i}", i, acc, 0.025, **{"objective.sentence": "nsp"})
            for i, acc in enumerate([0.51, 0.52, 0.50])]  # within the test-set interval of 0.5
    runs += [probe_record(f"s{i}", i, acc, 0.025, **{"objective.sentence": "sop"})
             for i, acc in enumerate([0.50, 0.61, 0.72])]  # one seed learned SOP: the t interval spans 0.5
    runs += [probe_record(f"a{i}", i, acc, 0.025, **{"objective.sentence": "none"})
             for i, acc in enumerate([0.64, 0.66, 0.65])]  # clearly above chance
    render.write_report(runs, tmp_path, "t")
    rows = table((tmp_path / "report.md").read_text())
    column = "probe/sop_acc"
    assert rows["objective.sentence=nsp"][column].endswith("≈ chance")
    assert rows["objective.sentence=sop"][column] == "0.61 ± 0.11 ≈ chance"
    assert rows["objective.sentence=none"][column] == "0.650 ± 0.010"
    assert "probe/sop_acc (n=1500, 95% CI ≤ ±0.025)" in (tmp_path / "report.md").read_text()


def test_runs_with_different_tokenizers_are_marked_not_ranked_per_token(tmp_path: Path) -> None:
    runs = []
    for kind in ("wordpiece", "bpe"):
        for seed in (1, 2, 3):
            rec = record(f"{kind}{seed}", seed, 3.0, **{"experiment": "bert" if kind == "wordpiece" else "roberta"})
            rec.config.update({"tokenizer.kind": kind, "tokenizer.vocab_size": 8192})
            rec.metrics.update({"eval/mlm_loss": (3.0 if kind == "bpe" else 3.5) + seed / 100,
                                "eval/mlm_loss_per_char": 0.8 + seed / 1000})
            runs.append(rec)
    render.write_report(runs, tmp_path, "t")
    md = (tmp_path / "report.md").read_text()
    rows = table(md)
    assert rows["experiment=bert"]["eval/mlm_loss"].endswith("†") and rows["experiment=bert"]["tokenizer"] == "wordpiece 8192"
    assert not rows["experiment=bert"]["eval/mlm_loss_per_char"].endswith("†")
    assert "different tokenizers: per-token losses are not comparable" in md
    verdict = table(md, DIFFERENCES)["experiment=roberta vs experiment=bert"]
    assert "eval/mlm_loss" not in verdict and verdict["eval/mlm_loss_per_char"].startswith("within noise")
    same = [r for r in runs if r.config["tokenizer.kind"] == "bpe"]
    assert not tables.tokenizers_differ({"x": same})


def test_point_plots_fit_the_data_not_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.figure import Figure

    limits: list[tuple[float, float]] = []
    save = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: (limits.extend(ax.get_xlim() for ax in fig.axes
                                                                              if ax.has_data()), save(fig, *a, **k)))
    runs = [record(f"{m}{s}", s, loss, **{"masking.mode": m}) for m, base in (("static", 7.05), ("dynamic", 6.88))
            for s, loss in ((1, base), (2, base + 0.02), (3, base - 0.02))]
    path = render.plot_points(tables.group_variants(runs), ["val/mlm_loss"], tmp_path / "p.png", "t")
    lo, hi = limits[0]
    assert 6.5 < lo < 6.86 and 7.07 < hi < 7.5  # the axis spans the points, so 7.05 vs 6.88 is visible
    assert matplotlib.image.imread(path).shape[1] <= 1220
