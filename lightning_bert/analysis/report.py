"""Ablation report: one row per variant (mean ± std over seeds, the canonical eval/mlm_loss first), Welch's
t-test between every pair of variants, the settings held constant, curves and point plots, one HTML page.

    lightning-bert report SOURCE [--out DIR]

SOURCE is a sweep directory (sweeps_out/NAME), any directory holding run directories with
summary.json, or a W&B sweep path ENTITY/PROJECT/SWEEP_ID (read through the W&B public API).
Reading: analysis/runs.py; tables: analysis/tables.py; the page and its plots: analysis/render.py.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from lightning_bert.analysis.render import write_report
from lightning_bert.analysis.runs import STATE_FILE, ReportError, read_local, read_wandb
from lightning_bert.args import ReportArgs, describe_schema, parse, required, run_main


def main(argv: Optional[list[str]] = None) -> int:
    def body(args: list[str]) -> int:
        opts, _ = parse(ReportArgs, args, positional=("source",), section="report")
        source_arg = required(opts.source, "report SOURCE [--out DIR]")
        source = Path(source_arg)
        if source.is_dir():
            records, out = read_local(source), Path(opts.out or source / "report")
        elif re.fullmatch(r"[\w.-]+/[\w.-]+/\w+", source_arg):
            records, out = read_wandb(source_arg), Path(opts.out or Path("reports") / source.name)
        else:
            raise ReportError(f"{source_arg} is neither a directory nor a W&B sweep path ENTITY/PROJECT/SWEEP_ID")
        if not records:
            raise ReportError(f"no run records (summary.json or {STATE_FILE}) found in {source_arg}")
        groups = ", ".join(dict.fromkeys(r.group for r in records if r.group)) or source.resolve().name
        page = write_report(records, out, f"Ablation report: {groups}")
        print(f"report written to {page} ({len(records)} runs)")
        return 0

    return run_main(__doc__ or "", body, argv, lambda: describe_schema(ReportArgs))
