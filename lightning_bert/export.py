"""Export a pretraining checkpoint as a transformers directory (and a sentence-transformers one), and
`model.init_from=DIR`: start pretraining from a transformers directory.

    python -m lightning_bert.export CKPT OUT_DIR [--overwrite] [--sentence-transformers --pooling cls|mean|eos --normalize]

OUT_DIR gets config.json, model.safetensors and fast tokenizer files, loadable with the Auto classes:
BERT layout -> BertForPreTraining (BertForMaskedLM without NSP/SOP), ALBERT options -> AlbertForPreTraining,
pre-LN -> RobertaPreLayerNormForMaskedLM, DeBERTa -> DebertaV2ForMaskedLM, XLNet -> XLNetLMHeadModel.
With --sentence-transformers, SentenceTransformer(OUT_DIR) loads it too (pooling, optional Normalize).
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from omegaconf import DictConfig

from lightning_bert.cli import describe_schema, parse, run_main
from lightning_bert.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class ExportConfig:
    ckpt: Optional[str] = None  # pretraining checkpoint, e.g. runs/NAME/checkpoints/last.ckpt (first positional)
    out_dir: Optional[str] = None  # directory to write (second positional); must be empty unless --overwrite
    overwrite: bool = False  # replace a non-empty OUT_DIR
    sentence_transformers: bool = False  # also write modules.json + Pooling (+ Normalize) for SentenceTransformer
    pooling: str = "cls"  # sentence-transformers pooling: cls | mean | eos (last non-padding token)
    normalize: bool = False  # sentence-transformers: L2-normalise the embeddings (Normalize module)

    def __post_init__(self) -> None:
        from lightning_bert.config import check_choice

        check_choice("export", "pooling", self.pooling, ("cls", "mean", "eos"))


def init_from(cfg: DictConfig) -> Any:
    """Read model.init_from and make `cfg` match it: sizes from its config, its tokenizer, its weights.

    An override that contradicts the directory (hidden size, layers, vocabulary, ...) is a one-line UserError
    naming the key. Returns lightning_bert.hf.HFInit (call .load_into(module) once the model exists)."""
    from lightning_bert.config import ModelConfig, TokenizerConfig
    from lightning_bert.hf import load_dir

    source = cfg.model.init_from
    init = load_dir(source)
    enc = init.encoder
    decided = {"num_layers": enc["num_layers"], "hidden_size": enc["hidden_size"], "num_heads": enc["num_heads"],
               "intermediate_size": enc["intermediate_size"],
               "embedding_size": enc.get("embedding_size") if enc.get("embedding_size") != enc["hidden_size"] else None,
               "share_layers": enc.get("share_layers", "none"), "norm_position": enc.get("norm_position", "post"),
               "attention": enc.get("attention", "absolute")}
    for key in ("position_biased_input", "max_relative_positions", "position_buckets", "share_att_key",
                "pos_att_type"):  # attention-kind details (DeBERTa, XLNet) where the directory has them
        if key in enc:
            value = enc[key]
            decided[key] = (value or None) if key == "position_buckets" else (
                list(value) if key == "pos_att_type" else value)
    defaults = ModelConfig()
    for key in decided:
        given = cfg.model[key]
        given = list(given) if key == "pos_att_type" else given
        if given != getattr(defaults, key) and given != decided[key]:
            raise UserError(f"model.{key}={given} contradicts model.init_from={source} ({key}={decided[key]}); "
                            f"drop the override")
    vocab = init.tokenizer.get_vocab_size()
    if cfg.tokenizer.vocab_size != TokenizerConfig().vocab_size and cfg.tokenizer.vocab_size != vocab:
        raise UserError(f"tokenizer.vocab_size={cfg.tokenizer.vocab_size} contradicts model.init_from={source} "
                        f"(vocabulary {vocab}); drop the override")
    if cfg.tokenizer.path:
        raise UserError(f"tokenizer.path={cfg.tokenizer.path} contradicts model.init_from={source}, "
                        "whose tokenizer is used; drop one of them")
    if cfg.data.max_seq_length > enc["max_position_embeddings"]:
        raise UserError(f"data.max_seq_length={cfg.data.max_seq_length} exceeds model.init_from={source}'s "
                        f"{enc['max_position_embeddings']} positions")
    for key, value in decided.items():
        cfg.model[key] = value
    cfg.model.max_position_embeddings = enc["max_position_embeddings"]
    if 300 <= vocab <= 1_000_000:  # the record says what was trained; a tiny test vocabulary keeps the default
        cfg.tokenizer.vocab_size = vocab
    log.info("model.init_from=%s: %d layers, hidden %d, vocabulary %d", source, enc["num_layers"],
             enc["hidden_size"], vocab)
    return init


def main(argv: Optional[Sequence[str]] = None) -> int:
    def body(args: list[str]) -> int:
        cfg, _ = parse(ExportConfig, args, positional=("ckpt", "out_dir"), section="export")
        if not cfg.ckpt or not cfg.out_dir:
            raise UserError("usage: export CKPT OUT_DIR [--overwrite] [--sentence-transformers --pooling cls|mean|eos "
                            "--normalize]")
        from lightning_bert.hf import export_dir

        out = export_dir(cfg.ckpt, cfg.out_dir, cfg.overwrite, cfg.sentence_transformers, cfg.pooling, cfg.normalize)
        print(f"exported to {out}")
        return 0

    return run_main(__doc__ or "", body, argv, lambda: describe_schema(ExportConfig))


if __name__ == "__main__":
    sys.exit(main())
