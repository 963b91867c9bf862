"""The offline sweep controller, driven with tests/fake_train.py in place of train.py."""
from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from lightning_bert.analysis import sweep

REPO = Path(__file__).resolve().parent.parent
FAKE = Path(__file__).with_name("fake_train.py")
TINY = {"trainer.batch_size": {"value": 2}, "data.max_seq_length": {"value": 32}}


def write_sweep(tmp_path: Path, parameters: dict[str, Any], method: str = "grid", **extra: Any) -> Path:
    spec = {"program": str(FAKE), "method": method, "metric": {"name": "val/mlm_loss", "goal": "minimize"},
            "parameters": {**parameters, **TINY},
            "command": ["${env}", "${interpreter}", "${program}", "${args_no_hyphens}"], **extra}
    path = tmp_path / "abl.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def pick(args: list[str], *keys: str) -> tuple[str, ...]:
    return tuple(a for a in args if a.split("=", 1)[0] in keys)


def calls(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def calls_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FAKE_TRAIN_CALLS", str(tmp_path / "calls.jsonl"))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    return tmp_path / "calls.jsonl"


def test_grid_runs_every_point_once_with_agent_command_and_env(tmp_path: Path, calls_file: Path) -> None:
    path = write_sweep(tmp_path, {"objective.sentence": {"values": ["nsp", "sop"]}, "run.seed": {"values": [1, 2]}})
    lines: list[str] = []
    state = sweep.run_sweep(path, out_dir=tmp_path / "out", echo=lines.append)
    assert [t["state"] for t in state["trials"]] == ["finished"] * 4
    seen = calls(calls_file)
    assert sorted(pick(c["args"], "objective.sentence", "run.seed") for c in seen) == [
        ("objective.sentence=nsp", "run.seed=1"), ("objective.sentence=nsp", "run.seed=2"),
        ("objective.sentence=sop", "run.seed=1"), ("objective.sentence=sop", "run.seed=2")]
    for trial, call in zip(state["trials"], seen):
        assert Path(call["run_dir"]) == (tmp_path / "out" / "runs" / trial["id"]).resolve()
        assert call["env"]["WANDB_RUN_ID"] == trial["id"]
        assert call["env"]["WANDB_RUN_GROUP"] == "abl" and call["env"]["WANDB_MODE"] == "offline"
        assert "data.max_seq_length=32" in call["args"] and "trainer.batch_size=2" in call["args"]
        assert call["env"]["LIGHTNING_BERT_TAGS"] == ",".join(pick(call["args"], "objective.sentence", "run.seed"))
        summary = json.loads((Path(call["run_dir"]) / "summary.json").read_text())
        assert trial["metrics"] == summary["metrics"]
    assert len(lines) == 4 and lines[0].startswith("trial 1/4 ") and "finished val/mlm_loss=" in lines[0]
    on_disk = json.loads((tmp_path / "out" / sweep.STATE_FILE).read_text())
    assert on_disk["trials"] == state["trials"]
    # a finished sweep started again runs nothing
    assert sweep.run_sweep(path, out_dir=tmp_path / "out")["trials"] == state["trials"]
    assert len(calls(calls_file)) == 4


def test_main_ends_by_naming_the_sweep_directory_and_the_report_command(tmp_path: Path, calls_file: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = write_sweep(tmp_path, {"run.seed": {"values": [1, 2]}})
    assert sweep.main([str(path), "--dir", str(tmp_path / "my out")]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-2:]
    assert last == [f"sweep directory: {tmp_path / 'my out'}",
                    f"report: python -m lightning_bert report '{tmp_path / 'my out'}'"]
    from lightning_bert.analysis import report  # the printed command works as printed

    assert report.main([str(tmp_path / "my out"), "--out", str(tmp_path / "rep")]) == 0


def test_crashing_trial_is_failed_and_the_next_one_runs(tmp_path: Path, calls_file: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_TRAIN_CRASH", "run.seed=1")
    path = write_sweep(tmp_path, {"run.seed": {"values": [1, 2]}})
    lines: list[str] = []
    state = sweep.run_sweep(path, out_dir=tmp_path / "out", echo=lines.append)
    assert [t["state"] for t in state["trials"]] == ["failed", "finished"]
    assert state["trials"][0]["exit_code"] == 1
    assert "failed" in lines[0] and "exit 1" in lines[0] and "finished" in lines[1]


def test_random_search_stops_after_count(tmp_path: Path, calls_file: Path) -> None:
    path = write_sweep(tmp_path, {"optim.lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2},
                                  "run.seed": {"values": [1, 2, 3]}}, method="random")
    state = sweep.run_sweep(path, count=3, out_dir=tmp_path / "out")
    assert len(state["trials"]) == 3 and len(calls(calls_file)) == 3
    assert all(1e-4 <= t["params"]["optim.lr"] <= 1e-2 for t in state["trials"])
    sweep.run_sweep(path, count=3, out_dir=tmp_path / "out")  # the count spans restarts
    assert len(calls(calls_file)) == 3
    assert len(sweep.run_sweep(path, count=4, out_dir=tmp_path / "out")["trials"]) == 4


def test_bayes_is_fed_finished_metrics(tmp_path: Path, calls_file: Path) -> None:
    path = write_sweep(tmp_path, {"optim.lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2}},
                       method="bayes")
    state = sweep.run_sweep(path, count=3, out_dir=tmp_path / "out")
    assert [t["state"] for t in state["trials"]] == ["finished"] * 3
    assert all("val/mlm_loss" in t["metrics"] for t in state["trials"])


def test_killed_controller_resumes_the_interrupted_trial_and_loses_no_grid_point(tmp_path: Path,
                                                                                 calls_file: Path) -> None:
    path = write_sweep(tmp_path, {"run.seed": {"values": [1, 2, 3, 4]}})
    out, state_file = tmp_path / "out", tmp_path / "out" / sweep.STATE_FILE
    cmd = [sys.executable, "-m", "lightning_bert", "sweep", str(path), "--dir", str(out)]
    env = {**os.environ, "FAKE_TRAIN_HANG": "run.seed=2"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True, stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 20
    while time.time() < deadline:  # wait until trial 2 is under way, then kill controller and trial
        trials = json.loads(state_file.read_text())["trials"] if state_file.exists() else []
        if len(trials) == 2 and trials[1]["state"] == "running" and len(calls(calls_file)) == 2:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "trial 2 " in done.stdout and "resumes from its last checkpoint" in done.stdout
    trials = json.loads(state_file.read_text())["trials"]
    assert [t["state"] for t in trials] == ["finished"] * 4 and trials[1]["resumed"] == 1
    assert [t["params"]["run.seed"] for t in trials] == [1, 2, 3, 4]  # the grid point kept its trial
    runs = [(pick(c["args"], "run.seed", "run.resume"), Path(c["run_dir"]).name) for c in calls(calls_file)]
    assert runs == [(("run.seed=1",), trials[0]["id"]), (("run.seed=2",), trials[1]["id"]),
                    (("run.seed=2", "run.resume=auto"), trials[1]["id"]),  # same run directory, resumed
                    (("run.seed=3",), trials[2]["id"]), (("run.seed=4",), trials[3]["id"])]
    assert calls(calls_file)[2]["env"]["WANDB_RUN_ID"] == trials[1]["id"]  # and the same W&B run


def test_build_command_expands_agent_macros(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_FLAG", "x")
    spec = {"command": ["${env}", "${interpreter}", "${program}", "--flag=${envvar:MY_FLAG}", "${args}",
                        "${args_no_hyphens}"]}
    cmd = sweep.build_command(spec, Path("/p/train.py"), {"objective.sentence": "nsp", "objective.sbo": True})
    assert cmd == ["/usr/bin/env", sys.executable, "/p/train.py", "--flag=x", "--objective.sentence=nsp",
                   "--objective.sbo=True", "objective.sentence=nsp", "objective.sbo=True"]
    assert sweep.build_command({}, Path("t.py"), {"a": 1}) == ["/usr/bin/env", sys.executable, "t.py", "--a=1"]


BAD = {
    "unknown parameter": ({"paramters_typo.lr": {"values": [1]}}, "paramters_typo.lr"),
    "rejected value": ({"objective.sentence": {"values": ["nsp", "bogus"]}}, "objective.sentence"),
    "rejected range end": ({"optim.lr": {"min": 0.001, "max": 2.0}}, "optim.lr"),
    "wrong type": ({"trainer.max_steps": {"value": 1.5}}, "trainer.max_steps"),
    "clashing grid point": ({"masking.unit": {"values": ["token", "span"]}, "objective.sbo": {"values": [False, True]}},
                            "masking.unit=token objective.sbo=True"),
    "nested parameters": ({"objective": {"parameters": {"sentence": {"value": "nsp"}}}}, "dotted names"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_parameters_fail_before_any_trial(name: str, tmp_path: Path, calls_file: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    parameters, expected = BAD[name]
    path = write_sweep(tmp_path, parameters, method="random" if "range" in name else "grid", run_cap=2)
    assert sweep.main([str(path), "--dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and err.count("\n") == 1
    assert not calls_file.exists()


@pytest.mark.parametrize("text, expected", [
    ("method: grid\nparameters: {run.seed: {values: [1]}}\n", "missing 'program'"),
    ("program: x.py\nmethod: grid\n", "missing 'parameters'"),
    ("program: x.py\nmethod: hyperband\nparameters: {run.seed: {values: [1]}}\n", "method 'hyperband'"),
    ("program: x.py\nmethod: bayes\nparameters: {optim.lr: {min: 0.001, max: 0.01}}\n", "metric"),
    ("program: x.py\nmethod: grid\nparameters: {run.seed: {values: [1]\n", "YAML syntax error"),
    ("program: x.py\nmethod: grid\nparameters: {run.seed: {valuez: [1]}}\n", "run.seed"),
    ("program: nowhere.py\nmethod: grid\nparameters: {run.seed: {values: [1]}}\n", "program nowhere.py not found"),
    ("program: x.py\nmethod: grid\nparameters: {run.seed: {values: [1]}}\ncommand: [${foo}]\n", "${foo}"),
    ("program: x.py\nmethod: grid\nparameters: {optim.lr: {min: 0.001, max: 0.01}}\n", "optim.lr is a disallowed type"),
    (None, "not found"),
])
def test_bad_sweep_files_exit_2(text: str | None, expected: str, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.yaml"
    (tmp_path / "x.py").write_text("")
    if text is not None:
        path.write_text(text)
    assert sweep.main([str(path), "--dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1


def test_random_without_count_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_sweep(tmp_path, {"run.seed": {"values": [1, 2]}}, method="random")
    assert sweep.main([str(path), "--dir", str(tmp_path / "out")]) == 2
    assert "--count" in capsys.readouterr().err


def test_other_parameters_in_an_existing_sweep_dir_are_refused(tmp_path: Path, calls_file: Path) -> None:
    sweep.run_sweep(write_sweep(tmp_path, {"run.seed": {"values": [1]}}), out_dir=tmp_path / "out")
    with pytest.raises(sweep.SweepError, match="other parameters"):
        sweep.run_sweep(write_sweep(tmp_path, {"run.seed": {"values": [1, 2]}}), out_dir=tmp_path / "out")


@pytest.mark.parametrize("path", sorted((REPO / "sweeps").glob("*.yaml")), ids=lambda p: p.stem)
def test_repo_sweeps_are_valid_and_hold_compute_equal(path: Path) -> None:
    spec = yaml.safe_load(path.read_text())
    sweep.load_sweep(path)
    params = spec["parameters"]
    assert spec["program"] == "train.py" and "${args_no_hyphens}" in spec["command"]
    # The canonical held-out MLM loss (the same inputs for every variant), per character when the variants'
    # tokenizers differ; a downstream score only where some variant trains no MLM at all.
    from lightning_bert.config import load

    varied = {k: p["values"] for k, p in params.items() if "values" in p and k != "run.seed"}
    variants = [load([f"{k}={v}" for k, v in zip(varied, combo)]) for combo in itertools.product(*varied.values())]
    if any(c.objective.get("lm", "mlm") != "mlm" for c in variants):
        assert spec["metric"] == {"name": "glue/avg", "goal": "maximize"}
    else:
        tokenizers = {(c.tokenizer.kind, c.tokenizer.vocab_size, c.tokenizer.path) for c in variants}
        assert spec["metric"] == {"name": "eval/mlm_loss_per_char" if len(tokenizers) > 1 else "eval/mlm_loss",
                                  "goal": "minimize"}
    assert "value" in params["data.max_seq_length"]
    if spec["method"] == "grid":  # an ablation: >= 3 seeds per variant, fixed tokens = steps x batch x length
        assert len(params["run.seed"]["values"]) >= 3
        # equal compute: a fixed step count at a fixed batch, a fixed budget of real tokens, or of model FLOPs
        # (objectives of unequal cost per token: RTD)
        budget = params.get("trainer.max_tokens") or params.get("trainer.max_flops") or params["trainer.max_steps"]
        assert "value" in budget and "value" in params["trainer.batch_size"]
    else:  # the search: fixed token budget, batch size free
        assert "value" in params["trainer.max_tokens"] and "trainer.max_steps" not in params


@pytest.mark.slow
def test_cpu_masking_sweep_repeats_each_static_mask_as_its_comment_says(shared_data: Path, tmp_path: Path) -> None:
    """RoBERTa's comparison: each static mask seen 4 times (dupe factor D over 4D passes over the data). The
    example count the file states is the real one, and its steps give those passes."""
    path = REPO / "sweeps" / "cpu_masking_mode.yaml"
    text, spec = path.read_text(), yaml.safe_load(path.read_text())
    fixed = {k: p["value"] for k, p in spec["parameters"].items() if "value" in p}
    from lightning_bert.config import load
    from lightning_bert.data.datamodule import PretrainDataModule

    overrides = [f"{k}={v}" for k, v in fixed.items() if not k.startswith(("logger.", "data.path"))]
    data = PretrainDataModule(load(overrides + [f"data.path={shared_data / 'wikipedia-en' / 'train.txt'}",
                                                "masking.mode=dynamic", f"data.cache_dir={tmp_path}"]))
    data.setup()
    examples = len(data.train_set)
    assert f"{examples:,} training examples" in text
    passes = fixed["trainer.max_steps"] * fixed["trainer.batch_size"] / examples
    dupes = fixed["masking.dupe_factor"]
    assert passes == pytest.approx(4 * dupes, abs=0.05)
    assert f"each seen {round(passes)} / {dupes} = 4 times" in text
