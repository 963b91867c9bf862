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
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from omegaconf import DictConfig, ListConfig

from lightning_bert.args import describe_schema, parse, run_main
from lightning_bert.config import ModelConfig, TokenizerConfig, check_choice
from lightning_bert.errors import UserError

if TYPE_CHECKING:
    from lightning_bert.hf.load import HFInit

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
        check_choice("export", "pooling", self.pooling, ("cls", "mean", "eos"))


# ModelConfig fields a directory does not decide: dropout stays the run's choice, and the position table is set
# from the directory after a check against data.max_seq_length (below), not compared as an override
NOT_DECIDED = ("dropout", "attention_dropout", "max_position_embeddings")
# where ModelConfig spells a value otherwise than EncoderConfig (the inverse of checkpoint.encoder_config)
MODEL_SPELLING: dict[str, Callable[[Any, dict[str, Any]], Any]] = {
    "embedding_size": lambda value, enc: None if value == enc["hidden_size"] else value,  # None = no factorisation
    "position_buckets": lambda value, enc: value or None,  # None = exact distances
    "pos_att_type": lambda value, enc: list(value),
}


def decided_fields(encoder: dict[str, Any]) -> dict[str, Any]:
    """The model section a transformers directory decides: every ModelConfig field among its EncoderConfig
    fields (in schema order), spelt as ModelConfig spells it."""
    decided = {}
    for name in (f.name for f in fields(ModelConfig) if f.name in encoder and f.name not in NOT_DECIDED):
        spell = MODEL_SPELLING.get(name)
        decided[name] = spell(encoder[name], encoder) if spell else encoder[name]
    return decided


def init_from(cfg: DictConfig) -> HFInit:
    """Read model.init_from and make `cfg` match it: sizes from its config, its tokenizer, its weights.

    An override that contradicts the directory (hidden size, layers, vocabulary, ...) is a one-line UserError
    naming the key. Returns the HFInit (call .load_into(module) once the model exists)."""
    from lightning_bert.hf.load import load_dir  # torch and tokenizers: not for `export --help`

    source = cfg.model.init_from
    init = load_dir(source)
    enc = init.encoder
    decided = decided_fields(enc)
    defaults = ModelConfig()
    for key, value in decided.items():
        given = cfg.model[key]
        given = list(given) if isinstance(given, ListConfig) else given
        if given != getattr(defaults, key) and given != value:
            raise UserError(f"model.{key}={given} contradicts model.init_from={source} ({key}={value}); "
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
        from lightning_bert.hf.export import export_dir

        out = export_dir(cfg.ckpt, cfg.out_dir, cfg.overwrite, cfg.sentence_transformers, cfg.pooling, cfg.normalize)
        print(f"exported to {out}")
        return 0

    return run_main(__doc__ or "", body, argv, lambda: describe_schema(ExportConfig))


if __name__ == "__main__":
    sys.exit(main())
