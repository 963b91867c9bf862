"""Resume guards: a checkpoint continues only the run that wrote it.

A resumed run must train what the interrupted one trained: a changed objective, masking, model, data,
tokenizer, optimiser, budget or seed would silently make a different run out of two halves.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from lightning_bert.train.checkpoint import read_checkpoint
from lightning_bert.train.checkpoint_io import previous_of
from lightning_bert.errors import UserError

log = logging.getLogger(__name__)
LAST = "last.ckpt"

# What a run trains. Everything else (logging, validation cadence, precision, devices' wiring) may change.
TRAINS = ("run.seed", "data", "tokenizer", "model", "masking", "objective", "optim", "trainer.max_steps",
          "trainer.max_tokens", "trainer.batch_size", "trainer.accumulate_grad_batches", "trainer.devices",
          "trainer.num_nodes")
MAY_CHANGE = ("data.num_workers", "data.cache_dir")


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def changed_keys(saved: dict[str, Any], current: DictConfig) -> list[str]:
    """Keys under TRAINS whose value differs between the checkpoint's config and this run's."""
    old = _flatten(saved)
    new = _flatten(OmegaConf.to_container(current, resolve=True))
    keys = sorted(set(old) | set(new))
    return [k for k in keys if any(k == t or k.startswith(t + ".") for t in TRAINS) and k not in MAY_CHANGE
            and old.get(k) != new.get(k)]


def check_resume_config(saved: dict[str, Any], current: DictConfig, force: bool) -> None:
    changed = changed_keys(saved, current)
    if changed and not force:
        old = _flatten(saved)
        shown = ", ".join(f"{k} ({old.get(k)!r} -> {OmegaConf.select(current, k)!r})" for k in changed[:4])
        more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
        raise UserError(f"cannot resume: the config changes what this run trains: {shown}{more}; "
                        "resume with the run's own settings or set run.resume_force=true")


def resume_checkpoint(cfg: DictConfig, run_dir: Path) -> Optional[tuple[Path, dict[str, Any]]]:
    """(path, contents) of the checkpoint to continue from, None for a fresh run. run.resume=auto takes
    the newest readable of last.ckpt and its predecessor, saying so when it falls back."""
    last = run_dir / "checkpoints" / LAST
    candidates = [p for p in (last, previous_of(last)) if p.is_file()]
    if cfg.run.resume == "none":
        if candidates:  # never train over a run's work by accident
            raise UserError(f"{run_dir} already holds a run; continue it with run.resume=auto or pick another run.name")
        return None
    if cfg.run.resume != "auto":
        path = Path(cfg.run.resume).expanduser()
        if not path.is_file():
            raise UserError(f"run.resume={path}: no such checkpoint; use none, auto or a .ckpt path")
        return path, read_checkpoint(path)
    problems = []
    for path in candidates:
        try:
            ckpt = read_checkpoint(path)
        except UserError as err:
            problems.append(str(err))
            continue
        if problems:
            log.warning("%s; resuming from the previous checkpoint %s (step %d) instead", "; ".join(problems), path,
                        ckpt["global_step"])
        return path, ckpt
    if problems:
        raise UserError(f"no readable checkpoint to resume in {last.parent}: {'; '.join(problems)}")
    return None


def check_same_data(pinned: dict[str, Any], found: dict[str, Any], force: bool) -> None:
    """The token cache a resumed run trains on must be the one its checkpoint recorded (a cache rebuilt on
    another node, or from a changed corpus, would silently continue on other data)."""
    if not pinned or pinned == found:
        return
    what = [name for name in sorted(set(pinned.get("arrays", {})) | set(found.get("arrays", {})))
            if pinned.get("arrays", {}).get(name) != found.get("arrays", {}).get(name)]
    if pinned.get("documents") != found.get("documents"):
        what.insert(0, f"documents {pinned.get('documents')} -> {found.get('documents')}")
    if force:
        log.warning("resuming on different data (%s): run.resume_force=true", ", ".join(what))
        return
    raise UserError(f"cannot resume: the token cache differs from the one the checkpoint trained on "
                    f"({', '.join(what)}); restore the corpus and cache or set run.resume_force=true")
