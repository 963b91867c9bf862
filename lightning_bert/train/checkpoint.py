"""Build the encoder from a config, and load a pretrained encoder + tokenizer from a checkpoint."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from lightning_bert.config import ModelConfig, upgrade_config
from lightning_bert.errors import UserError
from lightning_bert.model.config import EncoderConfig
from lightning_bert.model.encoder import BertEncoder


def encoder_config(cfg: DictConfig, vocab_size: int) -> EncoderConfig:
    """The encoder's config from the run config: every `model` field, the vocabulary, and position
    rows for the longest sequence."""
    model = ModelConfig(**OmegaConf.to_container(cfg.model))  # a plain dict when read back from a checkpoint
    fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(ModelConfig)}
    fields["max_position_embeddings"] = max(model.max_position_embeddings, cfg.data.max_seq_length)
    fields["init_from"] = None  # where the starting weights came from is the run's fact, not the encoder's
    return EncoderConfig(**fields, vocab_size=vocab_size)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """torch.load with one-line errors for a missing, unreadable or foreign file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        # mmap: reading the config or step of a large checkpoint does not pull every tensor into memory
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
        raise UserError(f"cannot read checkpoint {path}: {type(err).__name__}: {str(err).splitlines()[0]}") from None
    if not isinstance(ckpt, dict) or "config" not in ckpt.get("hyper_parameters", {}) or "tokenizer" not in ckpt:
        raise UserError(f"{path} is not a lightning-bert pretraining checkpoint (no config/tokenizer inside)")
    ckpt["hyper_parameters"]["config"] = upgrade_config(ckpt["hyper_parameters"]["config"])
    return ckpt


def load_pretrained(path: str | Path) -> tuple[BertEncoder, Any, DictConfig]:
    """(encoder with trained weights, tokenizers.Tokenizer, resolved config) from a pretraining checkpoint."""
    from tokenizers import Tokenizer

    ckpt = read_checkpoint(path)
    cfg = OmegaConf.create(ckpt["hyper_parameters"]["config"])
    tokenizer = Tokenizer.from_str(ckpt["tokenizer"])
    encoder = BertEncoder(encoder_config(cfg, tokenizer.get_vocab_size()))
    prefix = "encoder."
    weights = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    encoder.load_state_dict(weights)
    return encoder, tokenizer, cfg
