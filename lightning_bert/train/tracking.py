"""Weights & Biases through Lightning's WandbLogger: never prompts, never hangs, loses nothing.

Online when an API key is configured and the server answers; otherwise offline with a one-line
notice (sync later with `wandb sync`). Only global rank 0 creates the run.
"""
from __future__ import annotations

import logging
import os
import socket
import warnings
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

log = logging.getLogger(__name__)


# Third-party notices a user can do nothing about, each matched exactly (nothing broader is hidden):
_QUIET_LOGS = {
    # Lightning advertises its cloud products once per Trainer.
    "lightning.pytorch.utilities.rank_zero": ("\U0001f4a1 Tip: For seamless",),
    # Lightning's note when trainer.save_checkpoint is called without weights_only (full state is wanted).
    "lightning.pytorch.trainer.connectors.checkpoint_connector": ("`weights_only` was not set",),
}


class _DropPrefixes(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def quiet_third_party() -> None:
    """Keep a run's output to its own progress and results (call once per process, before training)."""
    # Lightning's _pytree still calls isinstance(x, LeafSpec), which torch >= 2.10 deprecates.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)
    # torchdata's StatefulDataLoader (data.backend=hf_streaming) calls a deprecated torch API.
    warnings.filterwarnings("ignore", message="'set_vital' is deprecated", category=UserWarning)
    for name, prefixes in _QUIET_LOGS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropPrefixes) for f in logger.filters):
            logger.addFilter(_DropPrefixes(prefixes))


def has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def server_reachable(timeout: float) -> bool:
    """A TCP connect to the W&B server: fails fast where wandb.init could hang for minutes."""
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def choose_mode(requested: str, timeout: float) -> str:
    """auto/online -> online only with a key and a reachable server; env WANDB_MODE wins over auto."""
    if requested == "auto":
        requested = os.environ.get("WANDB_MODE") or ("online" if has_api_key() else "offline")
        if requested == "offline" and not os.environ.get("WANDB_MODE"):
            log.warning("W&B: no API key found, logging offline (later: wandb sync <run dir>/wandb/offline-run-*)")
    if requested == "online" and not server_reachable(min(timeout, 10)):
        log.warning("W&B: server unreachable, logging offline instead (sync later with `wandb sync`)")
        requested = "offline"
    return requested


def _wandb_logger(mode: str, kwargs: dict[str, Any]) -> WandbLogger:
    logger = WandbLogger(mode=mode, **kwargs)
    # Lightning always passes anonymous=None, and wandb >= 0.19 warns that the setting has no effect.
    if logger._wandb_init.get("anonymous", "") is None:
        del logger._wandb_init["anonymous"]
    return logger


def wandb_logger(cfg: DictConfig, run_dir: Path, run_name: str, run_id: Optional[str],
                 config: dict[str, Any]) -> Optional[WandbLogger]:
    """The W&B logger for this run (None when disabled); `run_id` resumes an earlier run. Called once per
    run before the Trainer exists, it also quiets the third-party notices (quiet_third_party)."""
    quiet_third_party()
    wb = cfg.logger.wandb
    mode = choose_mode(wb.mode, wb.init_timeout) if rank_zero_only.rank == 0 else "offline"
    if mode == "disabled":
        return None
    import wandb

    tags = list(wb.tags) + [t for t in os.environ.get("LIGHTNING_BERT_TAGS", "").split(",") if t]
    kwargs = dict(project=wb.project, entity=wb.entity, name=run_name, save_dir=str(run_dir),
                  group=wb.group or os.environ.get("WANDB_RUN_GROUP"), tags=tags, config=config,
                  id=run_id or os.environ.get("WANDB_RUN_ID"), resume="allow",
                  settings=wandb.Settings(init_timeout=wb.init_timeout, console="off", silent=True))
    logger = _wandb_logger(mode, kwargs)
    if rank_zero_only.rank == 0:
        try:
            logger.experiment  # creates the run now, inside the guard, not mid-training
        except Exception as err:  # noqa: BLE001 - any init failure: keep training, offline
            log.warning("W&B: online init failed (%s), logging offline", str(err).splitlines()[0])
            logger = _wandb_logger("offline", kwargs)
            logger.experiment
    return logger
