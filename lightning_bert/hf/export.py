"""Checkpoint -> transformers directory: config.json + model.safetensors + fast tokenizer files, and optionally
the sentence-transformers modules. The adapter is the one that exports the checkpoint's config (hf/registry.py)."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from tokenizers import Tokenizer, processors

from lightning_bert.train.checkpoint import encoder_config, read_checkpoint
from lightning_bert.data.tokenizer import SPECIAL_TOKENS
from lightning_bert.eval.embeddings import POOLINGS
from lightning_bert.errors import UserError
from lightning_bert.hf.adapter import HFAdapter, pair_head
from lightning_bert.hf.electra import rtd_exporter
from lightning_bert.hf.registry import exporter
from lightning_bert.model.config import EncoderConfig

log = logging.getLogger(__name__)

# objectives transformers has no place for: dropped on export, with this notice
DROPPED = {"emd": "DeBERTa's enhanced mask decoder (EMD) is dropped: transformers has no EMD",
           "sbo": "SpanBERT's span boundary head is dropped: transformers has no SBO head"}


def hf_model_from_checkpoint(ckpt: dict[str, Any], cfg: EncoderConfig) -> Any:
    """A transformers model holding the checkpoint's weights (MLM head, pooler and pair head where they fit)."""
    import transformers

    state = {k: v.float() for k, v in ckpt["state_dict"].items()}
    adapter = rtd_exporter(state, cfg) or exporter(cfg)  # RTD: the discriminator
    arch = adapter.architecture(cfg, state)
    for marker, notice in DROPPED.items():  # e.g. objectives.mlm.emd.* or objectives.sbo.*
        if any(f".{marker}." in k for k in state if k.startswith("objectives.")):
            log.warning(notice)
    pair = pair_head(state)
    if pair and not arch.endswith("PreTraining"):
        log.warning("the %s head is dropped: %s has no pooler or pair head", pair, arch)
    hf_cfg = adapter.hf_config(cfg, architectures=[arch])
    model = getattr(transformers, arch)(hf_cfg).eval()
    mapped = adapter.to_hf(state, cfg)
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    missing = [k for k in missing if not k.endswith(("position_ids", "token_type_ids"))]
    if missing or unexpected:  # a map bug, not a user error: say exactly what is off
        raise RuntimeError(f"weight map for {arch} is incomplete: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model


def fast_tokenizer(tokenizer_json: str, max_length: int, input_names: tuple[str, ...] = HFAdapter.input_names) -> Any:
    """Our tokenizers.Tokenizer as a transformers fast tokenizer: [CLS] A [SEP] (B [SEP]) added, as ours."""
    import transformers

    tok = Tokenizer.from_str(tokenizer_json)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    tok.no_padding()
    tok.no_truncation()
    pad, unk, cls, sep, mask = SPECIAL_TOKENS
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=pad, unk_token=unk, cls_token=cls, sep_token=sep, mask_token=mask,
        model_max_length=max_length, model_input_names=list(input_names))


def prepare_out_dir(out_dir: str | Path, overwrite: bool) -> Path:
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"OUT_DIR {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"OUT_DIR {out} exists and is not empty; pass --overwrite to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def export_dir(ckpt_path: str | Path, out_dir: str | Path, overwrite: bool = False,
               sentence_transformers: bool = False, pooling: str = "cls", normalize: bool = False) -> Path:
    """Write a transformers (and optionally sentence-transformers) directory for a pretraining checkpoint."""
    if pooling not in POOLINGS:
        raise UserError(f"--pooling {pooling} is not allowed; choose one of {', '.join(POOLINGS)}")
    ckpt = read_checkpoint(ckpt_path)  # one-line UserError for a missing or corrupt file
    run_cfg = OmegaConf.create(ckpt["hyper_parameters"]["config"])
    vocab = Tokenizer.from_str(ckpt["tokenizer"]).get_vocab_size()
    cfg = encoder_config(run_cfg, vocab)
    model = hf_model_from_checkpoint(ckpt, cfg)  # fails (one line) before anything is written
    out = prepare_out_dir(out_dir, overwrite)
    model.save_pretrained(out, safe_serialization=True)
    fast_tokenizer(ckpt["tokenizer"], cfg.max_position_embeddings, exporter(cfg).input_names).save_pretrained(out)
    if sentence_transformers:
        write_sentence_transformers(out, cfg.hidden_size, pooling, normalize, int(run_cfg.data.max_seq_length))
    log.info("exported %s as %s to %s", ckpt_path, model.config.architectures[0], out)
    return out


def write_sentence_transformers(out: Path, hidden: int, pooling: str, normalize: bool, max_length: int) -> None:
    """modules.json, the Transformer module (this directory), Pooling and optionally Normalize, saved by the
    library itself so its own loader reads them back."""
    try:
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    except ImportError:  # older releases keep the modules here
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.models import Normalize, Pooling, Transformer

    modes = {"cls": "cls", "mean": "mean", "eos": "lasttoken"}  # eos = last non-padding token ([SEP])
    modules = [Transformer(str(out), max_seq_length=max_length), Pooling(hidden, pooling_mode=modes[pooling])]
    if normalize:
        modules.append(Normalize())
    SentenceTransformer(modules=modules, device="cpu").save(str(out))
