"""Resume guards: a checkpoint continues only the run that wrote it.

A resumed run must train what the interrupted one trained: a changed objective, masking, model, data,
tokenizer, optimiser, budget or seed would silently make a different run out of two halves.
"""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from lightning_bert.errors import UserError

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
