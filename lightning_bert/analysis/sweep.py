"""Offline sweep controller: run a W&B sweep YAML on this machine, no server needed.

    lightning-bert sweep sweeps/sentence_task.yaml [--count N] [--dir DIR]

Suggestions come from the `sweeps` package (the grid/random/bayes code W&B runs); each trial
runs the YAML's `command` as `wandb agent` would build it, with LIGHTNING_BERT_RUN_DIR set to
<dir>/runs/<trial id>. Trial states live in <dir>/sweep_state.json, written atomically, so a
restarted sweep resumes where it stopped: a trial the stop interrupted continues from its last
checkpoint (run.resume=auto, same run directory and W&B run), and no grid point runs twice.
"""
from __future__ import annotations

import fcntl
import itertools
import json
import math
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from lightning_bert.analysis.runs import STATE_FILE, read_state, read_summary
from lightning_bert.args import SweepArgs, describe_schema, parse, required, run_main
from lightning_bert.errors import UserError
from lightning_bert.train.durable import atomic_write_text

REPO_ROOT = Path(__file__).resolve().parents[2]
INTERRUPTED = "interrupted"  # its controller stopped mid-trial, or it was preempted: the next start resumes it
PREEMPTED_EXITS = (143, 138)  # train.py stopped by SIGTERM / SIGUSR1 after saving its checkpoint (README)
METHODS = ("grid", "random", "bayes")
DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]
MACROS = ("env", "interpreter", "program", "args", "args_no_hyphens", "args_json")
ENVVAR = re.compile(r"\$\{envvar:([A-Z0-9_]*)\}")
SWEEPS_STATE = {INTERRUPTED: "preempted"}  # our trial states that the sweeps package names otherwise
MAX_GRID_CHECKS = 1000  # grid points validated up front (15 ms each)
MAX_CONTEXTS = 20  # choices of the other parameters a value is tried with


class SweepError(UserError):
    """A bad sweep file, sweep directory or command line."""


def override(key: str, value: Any) -> str:
    """`key=value` exactly as the W&B agent formats `${args_no_hyphens}` (Python str())."""
    return f"{key}={value}"


def _config_error(overrides: list[str]) -> Optional[str]:
    """The config schema's one-line complaint about these overrides, or None."""
    from lightning_bert import config  # lazy: only needed to validate

    try:
        config.load(overrides=overrides)
    except UserError as err:
        return str(err)
    return None


def _check_parameters(params: dict[str, Any], method: str) -> None:
    """Every value must load next to some choice of the other parameters; every grid point must load."""
    options = {k: [override(k, v) for v in _candidates(p)] for k, p in params.items()}
    for name, args in options.items():
        others = itertools.product(*(o for k, o in options.items() if k != name))
        contexts = [list(c) for c in itertools.islice(others, MAX_CONTEXTS)]
        for arg in args:
            errors = (_config_error(c + [arg]) for c in contexts)
            first = next(errors)
            if first and all(errors):  # fails whatever the other parameters are
                raise SweepError(f"parameter {name}: {first}")
    if method == "grid":  # values valid alone can still clash (objective.sbo needs masking.unit=span)
        for combo in itertools.islice(itertools.product(*options.values()), MAX_GRID_CHECKS):
            error = _config_error(list(combo))
            if error:
                raise SweepError(f"parameters {' '.join(combo)}: {error}")


def _candidates(param: dict[str, Any]) -> list[Any]:
    """The values of a parameter worth validating: every listed value, or a range's ends."""
    if "values" in param:
        return list(param["values"])
    if "value" in param:
        return [param["value"]]
    dist = param.get("distribution", "")
    if "min" in param and "max" in param:
        lo, hi = param["min"], param["max"]
        if dist in ("log_uniform", "q_log_uniform"):  # bounds are exponents here
            return [math.exp(lo), math.exp(hi)]
        if dist == "inv_log_uniform":
            return [math.exp(-hi), math.exp(-lo)]
        return [lo, hi]
    return [param.get("mu", 0.0)]


def grid_size(params: dict[str, Any]) -> int:
    return math.prod(len(_candidates(p)) if "values" in p else 1 for p in params.values())


def _sweeps() -> Any:
    """The `sweeps` package, imported lazily (scipy) and without its pydantic v2 deprecation warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import sweeps
    return sweeps


def _suggest(spec: dict[str, Any], runs: list[Any]) -> Any:
    """The next trial from the `sweeps` package (None once a grid is done), without its chatter."""
    sweeps = _sweeps()
    with warnings.catch_warnings():  # the bayes GP's convergence warnings
        warnings.simplefilter("ignore")
        return sweeps.next_run(spec, runs)


def load_sweep(path: str | Path) -> dict[str, Any]:
    """Read a sweep YAML and check it against the sweep schema and the config schema."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"sweep file {path} not found")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SweepError(f"{path}: YAML syntax error: {' '.join(str(err).split())}") from None
    if not isinstance(spec, dict):
        raise SweepError(f"{path}: expected a mapping with program, method and parameters")
    for key in ("program", "method", "parameters"):
        if not spec.get(key):
            raise SweepError(f"{path}: missing '{key}'")
    if spec["method"] not in METHODS:
        raise SweepError(f"{path}: method '{spec['method']}' is not one of {', '.join(METHODS)}")
    if spec["method"] == "bayes" and not (spec.get("metric") or {}).get("name"):
        raise SweepError(f"{path}: bayes search needs a 'metric' section with a name (e.g. val/loss)")
    if not isinstance(spec["parameters"], dict):
        raise SweepError(f"{path}: 'parameters' must map parameter names to values/value/min+max")
    for item in spec.get("command") or []:
        if str(item).startswith("${") and str(item)[2:-1] not in MACROS and not ENVVAR.fullmatch(str(item)):
            raise SweepError(f"{path}: command macro {item} is not supported; use one of "
                             + ", ".join("${%s}" % m for m in MACROS))
    for name, param in spec["parameters"].items():
        if not isinstance(param, dict) or "parameters" in param:
            raise SweepError(f"parameter {name}: give values, value or min/max; write nested keys as "
                             "dotted names, e.g. objective.sentence: {values: [nsp, sop]}")
    violations = _sweeps().schema_violations_from_proposed_config(spec)
    if violations:
        raise SweepError(f"{path}: " + "; ".join(" ".join(v.split()) for v in violations))
    try:  # what the schema allows but the method does not (a float range in a grid, ...)
        _suggest(spec, [])
    except ValueError as err:
        raise SweepError(f"{path}: {' '.join(str(err).split())}") from None
    _check_parameters(spec["parameters"], spec["method"])
    return spec


def resolve_program(program: str, sweep_file: Path) -> Path:
    """`program` relative to the working directory (as wandb agent does), the repo root or the YAML."""
    prog = Path(program).expanduser()
    places = [prog] if prog.is_absolute() else [Path.cwd() / prog, REPO_ROOT / prog, sweep_file.parent / prog]
    for place in places:
        if place.is_file():
            return place.resolve()
    raise SweepError(f"program {program} not found (looked in the working directory, {REPO_ROOT}, "
                     f"{sweep_file.parent})")


def build_command(spec: dict[str, Any], program: Path, params: dict[str, Any]) -> list[str]:
    """Expand the YAML's `command` list the way the W&B agent does."""
    args = [override(k, v) for k, v in params.items()]
    macros = {"env": ["/usr/bin/env"], "interpreter": [sys.executable], "program": [str(program)],
              "args": [f"--{a}" for a in args], "args_no_hyphens": args, "args_json": [json.dumps(params)]}
    out: list[str] = []
    for item in spec.get("command") or DEFAULT_COMMAND:
        item = ENVVAR.sub(lambda m: os.environ.get(m[1], m[1]), str(item))
        out += macros[item[2:-1]] if item.startswith("${") and item[2:-1] in macros else [item]
    return out


def varied_keys(params: dict[str, Any]) -> list[str]:
    """Parameters that take more than one value: the W&B tags and the report's variants (+seed)."""
    return [k for k, p in params.items() if "value" not in p and len(p.get("values", [0, 1])) > 1]


def _save_state(sweep_dir: Path, state: dict[str, Any]) -> None:
    """Replaced atomically and durably: a crash leaves the old state or the new one, whole."""
    atomic_write_text(sweep_dir / STATE_FILE, json.dumps(state, indent=1, default=lambda o: o.item()))  # numpy scalars


def _load_state(sweep_dir: Path, spec: dict[str, Any], name: str, echo: Callable[[str], None]) -> dict[str, Any]:
    path = sweep_dir / STATE_FILE
    if not path.exists():
        return {"name": name, "method": spec["method"], "parameters": spec["parameters"], "trials": []}
    state = read_state(path)  # one cut off mid-write keeps its complete trials
    if state.get("parameters") != spec["parameters"] or state.get("method") != spec["method"]:
        raise SweepError(f"{sweep_dir} holds a sweep with other parameters or method; pass --dir for a new one")
    for trial in state["trials"]:
        if trial["state"] in ("running", "crashed"):  # its controller was stopped ("crashed": older state files)
            summary = read_summary(sweep_dir / "runs" / trial["id"])
            done = summary.get("status") == "finished"
            trial.update(state="finished" if done else INTERRUPTED, metrics=summary.get("metrics", {}))
            echo(f"trial {trial['index']} {trial['id']} was left running by a stopped controller: "
                 + ("its run had finished, kept" if done else "it resumes from its last checkpoint"))
    _save_state(sweep_dir, state)
    return state


def _run_trial(trial: dict[str, Any], cmd: list[str], sweep_dir: Path, name: str, tags: list[str],
               resume: bool = False) -> None:
    run_dir = (sweep_dir / "runs" / trial["id"]).resolve()
    log = sweep_dir / "logs" / f"{trial['id']}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LIGHTNING_BERT_RUN_DIR": str(run_dir), "WANDB_RUN_GROUP": name,
           "WANDB_RUN_ID": trial["id"], "LIGHTNING_BERT_TAGS": ",".join(tags)}
    env.setdefault("WANDB_MODE", "offline")
    start = time.time()
    with open(log, "a" if resume else "w") as fh:  # a resumed trial's log keeps its first part
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        try:
            code = proc.wait()
        except BaseException:  # Ctrl-C / SIGTERM: stop the trial too; it stays "running" -> resumed next start
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    summary = read_summary(run_dir)
    ok = code == 0 and summary.get("status", "finished") == "finished"
    # a preempted trial saved its checkpoint: resumable (the next controller start continues it), not failed
    outcome = "finished" if ok else INTERRUPTED if code in PREEMPTED_EXITS else "failed"
    trial.update(state=outcome, exit_code=code, duration_s=round(time.time() - start, 2),
                 metrics=summary.get("metrics", {}), best=summary.get("best", {}), log=str(log))


def _progress(trial: dict[str, Any], total: int, shown: list[str], metric: str) -> str:
    params = " ".join(override(k, trial["params"][k]) for k in shown)
    value = trial.get("metrics", {}).get(metric)
    result = f"{metric}={value:.4g}" if isinstance(value, (int, float)) else f"{metric}=n/a"
    if trial["state"] != "finished":
        result += f" (exit {trial.get('exit_code')}, log {trial.get('log')})"
    return (f"trial {trial['index']}/{total} {trial['id']} {params}: {trial['state']} {result} "
            f"({trial.get('duration_s', 0):.1f}s)")


def _run_trials(spec: dict[str, Any], state: dict[str, Any], total: int, program: Path, sweep_dir: Path,
                echo: Callable[[str], None]) -> None:
    sweeps = _sweeps()
    metric = (spec.get("metric") or {}).get("name", "val/loss")
    shown = varied_keys(spec["parameters"])

    def execute(trial: dict[str, Any], resume: bool = False) -> None:
        """Run one trial with its state saved before and after; a resumed one continues its run directory."""
        _save_state(sweep_dir, state)
        params = {**trial["params"], "run.resume": "auto"} if resume else trial["params"]
        _run_trial(trial, build_command(spec, program, params), sweep_dir, state["name"],
                   [override(k, trial["params"][k]) for k in shown], resume=resume)
        _save_state(sweep_dir, state)
        echo(_progress(trial, total, shown, metric))

    for trial in state["trials"]:  # first finish what a stopped controller left: same run dir, same W&B run
        if trial["state"] == INTERRUPTED:
            trial.update(state="running", resumed=trial.get("resumed", 0) + 1)
            execute(trial, resume=True)
    while len(state["trials"]) < total:
        done = [sweeps.SweepRun(name=t["id"], state=SWEEPS_STATE.get(t["state"], t["state"]),
                                summary_metrics=t.get("metrics", {}),
                                config={k: {"value": v} for k, v in t["params"].items()}) for t in state["trials"]]
        suggestion = _suggest(spec, done)
        if suggestion is None:  # grid exhausted
            return
        index = len(state["trials"]) + 1
        params = {k: v["value"] for k, v in suggestion.config.items()}
        trial = {"index": index, "id": f"trial{index:03d}-{secrets.token_hex(3)}", "params": params,
                 "state": "running", "started_at": time.time()}
        state["trials"].append(trial)
        execute(trial)


def sweep_directory(sweep_file: str | Path, out_dir: Optional[str | Path] = None) -> Path:
    """--dir, else sweeps_out/<yaml stem>."""
    return Path(out_dir or Path("sweeps_out") / Path(sweep_file).stem)


def run_sweep(sweep_file: str | Path, count: Optional[int] = None, out_dir: Optional[str | Path] = None,
              echo: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Run (or resume) the sweep until it holds `count` trials or the grid is done; return its state."""
    sweep_file = Path(sweep_file)
    spec = load_sweep(sweep_file)
    if count is not None and count < 1:
        raise SweepError(f"--count must be >= 1, got {count}")
    grid = grid_size(spec["parameters"]) if spec["method"] == "grid" else None
    total = min((n for n in (count or spec.get("run_cap"), grid) if n), default=None)
    if total is None:
        raise SweepError(f"{spec['method']} search never ends by itself: pass --count N or set run_cap in the YAML")
    program = resolve_program(str(spec["program"]), sweep_file)
    name = str(spec.get("name") or sweep_file.stem)
    sweep_dir = sweep_directory(sweep_file, out_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(sweep_dir / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when the file closes or we die
        except OSError:
            raise SweepError(f"another controller is running the sweep in {sweep_dir}") from None
        state = _load_state(sweep_dir, spec, name, echo)
        _run_trials(spec, state, total, program, sweep_dir, echo)
    return state


def main(argv: Optional[list[str]] = None) -> int:
    def body(args: list[str]) -> int:
        opts, _ = parse(SweepArgs, args, positional=("sweep_file",), section="sweep")
        sweep_file = required(opts.sweep_file, "sweep SWEEP_YAML [--count N] [--dir DIR]")
        # unwind like Ctrl-C: the trial is stopped too; restored after, so a caller in this process keeps its own
        before = signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            state = run_sweep(sweep_file, opts.count, opts.dir, echo=lambda line: print(line, flush=True))
        except KeyboardInterrupt:
            print("interrupted: the running trial was stopped; rerun the same command to resume", file=sys.stderr)
            return 130
        finally:
            signal.signal(signal.SIGTERM, before)
        counts = {s: sum(t["state"] == s for t in state["trials"]) for s in ("finished", "failed", INTERRUPTED)}
        sweep_dir = sweep_directory(sweep_file, opts.dir)
        print(f"sweep {state['name']}: " + ", ".join(f"{n} {s}" for s, n in counts.items()), flush=True)
        print(f"sweep directory: {sweep_dir}\nreport: python -m lightning_bert report {shlex.quote(str(sweep_dir))}",
              flush=True)
        return 0

    return run_main(__doc__ or "", body, argv, lambda: describe_schema(SweepArgs))
