"""The config schema (the public interface) and `load()`: defaults <- experiments/NAME.yaml <- overrides.

Every knob has a default and a one-line comment. Values are checked in `__post_init__`, which
`OmegaConf.to_object` runs, so a bad key, type or value fails before any heavy import or data work.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Optional, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lightning_bert.args import describe_schema, explain
from lightning_bert.errors import ConfigError

EXPERIMENTS_DIR = Path(__file__).resolve().parent.parent / "experiments"

# One source of truth for model sizes: (layers, hidden, heads, ffn). tiny..small follow Turc et al. 2019.
MODEL_SIZES: dict[str, tuple[int, int, int, int]] = {
    "tiny": (2, 128, 2, 512),
    "mini": (4, 256, 4, 1024),
    "small": (4, 512, 8, 2048),
    "medium": (8, 512, 8, 2048),
    "base": (12, 768, 12, 3072),
    "large": (24, 1024, 16, 4096),
}

@dataclass(frozen=True)
class PositionScheme:
    """What the config checks and the FLOP count know of a position scheme (its module: model/positions.py)."""

    input_embeddings: bool  # default of model.position_biased_input: learned absolute positions at the input
    score_terms: int  # score matmuls per layer, content-to-content included (lightning_bert/train/flops.py)
    query_positions: bool = False  # can place a separate query stream at given positions (XLNet's two streams)
    sin_cos: bool = False  # sin/cos pairs of the hidden size: it must be even
    rotary: bool = False  # rotates q and k in pairs of the head dimension: it must be even (RoPE)


# The one torch-free declaration of the attention and position kinds, so a bad name fails at load. The
# registries in model/attention.py and model/positions.py read it and refuse a kind that is not declared here.
POSITION_SCHEMES: dict[str, PositionScheme] = {
    "absolute": PositionScheme(input_embeddings=True, score_terms=1),  # learned absolute positions at the input
    "disentangled": PositionScheme(input_embeddings=False, score_terms=3),  # DeBERTa: c2c + c2p + p2c
    "sinusoidal_relative": PositionScheme(input_embeddings=False, score_terms=2, query_positions=True, sin_cos=True),
    "rope": PositionScheme(input_embeddings=False, score_terms=1, rotary=True),  # rotary q and k (Su et al. 2021)
}
# Attention kind -> the position schemes it accepts, its default (model.positions=null) first.
ATTENTION_KINDS: dict[str, tuple[str, ...]] = {
    "absolute": ("absolute", "rope"),  # BERT; RoPE (ModernBERT, NeoBERT)
    "disentangled": ("disentangled",),  # DeBERTa
    "relative": ("sinusoidal_relative",),  # Transformer-XL / XLNet
}

# Gated feed-forward kinds (GLU: an up projection of 2 x width chunked into input and gate, so 3 matrices
# of hidden x width, not 2) -> their width as a share of model.intermediate_size. SwiGLU keeps GELU's
# parameter count at 2/3 of it (Shazeer 2020, NeoBERT); ModernBERT's GeGLU keeps the full width.
GATED_FFNS: dict[str, Fraction] = {"geglu": Fraction(1), "swiglu": Fraction(2, 3)}


def check_choice(section: str, name: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        raise ConfigError(f"{section}.{name}={value!r} is not allowed; choose one of {', '.join(map(str, allowed))}")


def check_range(section: str, name: str, ok: bool, rule: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{section}.{name}={value!r} is out of range; it must be {rule}")


SEED_MAX = 2**32 - 1  # numpy's seed range, which Lightning's seed_everything enforces (it picks a random seed outside)


@dataclass
class RunConfig:
    name: Optional[str] = None  # run directory and W&B run name; default <experiment>-<timestamp>
    output_dir: str = "runs"  # run directories go under here (env LIGHTNING_BERT_RUN_DIR overrides the whole path)
    seed: int = 0  # seeds model init, example building, masking and data order
    resume: str = "none"  # none | auto (last checkpoint of this run directory) | path/to/file.ckpt
    resume_force: bool = False  # resume even if the config changes what the run trains (objective, data, ...)
    experiment: Optional[str] = None  # preset loaded from experiments/NAME.yaml (set by `experiment=NAME`)

    def __post_init__(self) -> None:
        check_range("run", "seed", 0 <= self.seed <= SEED_MAX, f"in [0, {SEED_MAX}]", self.seed)


@dataclass
class DataConfig:
    path: list[str] = field(default_factory=list)  # files or globs; empty = built-in stdlib-docstring corpus
    format: str = "auto"  # auto | text | wikiextractor | wikitext | jsonl | book
    hf_dataset: Optional[str] = None  # Hugging Face dataset NAME[/CONFIG] (online) instead of data.path
    hf_split: str = "train"  # split of the Hugging Face dataset
    text_field: str = "text"  # JSONL / Hugging Face field holding the text
    max_documents: Optional[int] = None  # keep only the first N documents (quick runs)
    valid_fraction: float = 0.05  # share of documents held out for validation (at least two)
    max_seq_length: int = 128  # tokens per example, [CLS]/[SEP] included
    cross_doc: bool = True  # sentence=none packing crosses documents with a [SEP] (RoBERTa FULL-SENTENCES)
    pack_attention: str = "cross"  # cross (packed documents see each other, RoBERTa) | document (block-diagonal mask, positions restart: ModernBERT)
    short_seq_prob: float = 0.1  # share of pair examples with a shorter random target length (BERT)
    cache_dir: str = "~/.cache/lightning_bert"  # tokenizers and tokenized corpora, keyed by content
    num_workers: int = 0  # DataLoader worker processes
    backend: str = "cache"  # cache (memory-mapped token cache, map-style) | hf_streaming (HF datasets, sharded by rank)
    valid_path: list[str] = field(default_factory=list)  # hf_streaming: held-out files for val/eval (the stream has no held-out block)

    def __post_init__(self) -> None:
        check_choice("data", "format", self.format, ("auto", "text", "wikiextractor", "wikitext", "jsonl", "book"))
        check_range("data", "valid_fraction", 0 < self.valid_fraction < 1, "between 0 and 1", self.valid_fraction)
        check_range("data", "max_seq_length", 16 <= self.max_seq_length <= 4096, "in [16, 4096]", self.max_seq_length)
        check_range("data", "short_seq_prob", 0 <= self.short_seq_prob <= 1, "in [0, 1]", self.short_seq_prob)
        check_range("data", "num_workers", self.num_workers >= 0, ">= 0", self.num_workers)
        check_choice("data", "backend", self.backend, ("cache", "hf_streaming"))
        check_choice("data", "pack_attention", self.pack_attention, ("cross", "document"))
        if self.max_documents is not None:
            check_range("data", "max_documents", self.max_documents >= 2, ">= 2", self.max_documents)
        check_range("data", "cache_dir", bool(self.cache_dir.strip()), "a directory path", self.cache_dir)


@dataclass
class TokenizerConfig:
    kind: str = "wordpiece"  # wordpiece (BERT) | bpe (byte-level, RoBERTa) | unigram (ALBERT)
    vocab_size: int = 8192  # trained vocabulary size, special tokens included
    lowercase: bool = True  # lowercase before WordPiece/Unigram (byte-level BPE keeps case)
    min_frequency: int = 2  # minimum pair/word count to enter the vocabulary
    path: Optional[str] = None  # load this tokenizer.json instead of training one

    def __post_init__(self) -> None:
        check_choice("tokenizer", "kind", self.kind, ("wordpiece", "bpe", "unigram"))
        check_range("tokenizer", "vocab_size", 300 <= self.vocab_size <= 1_000_000, "in [300, 1000000]", self.vocab_size)
        # tokenizers' trainers take an unsigned count (a negative one is an OverflowError deep in Rust)
        check_range("tokenizer", "min_frequency", 0 <= self.min_frequency <= 2**32 - 1, "in [0, 4294967295]",
                    self.min_frequency)


@dataclass
class ModelConfig:
    size: str = "tiny"  # tiny | mini | small | medium | base | large (see MODEL_SIZES)
    num_layers: Optional[int] = None  # overrides the size's layer count
    hidden_size: Optional[int] = None  # overrides the size's hidden width
    num_heads: Optional[int] = None  # overrides the size's attention heads
    intermediate_size: Optional[int] = None  # overrides the size's FFN width
    embedding_size: Optional[int] = None  # ALBERT factorised embeddings: E < hidden, projected up
    share_layers: str = "none"  # ALBERT cross-layer sharing: none | all | attention | ffn
    norm_position: str = "post"  # post (BERT) | pre (the norm before each sublayer)
    norm: str = "layernorm"  # norm kind: a name in model/layers.py NORMS
    ffn: str = "gelu"  # feed-forward kind: a name in model/layers.py FEED_FORWARDS
    dropout: float = 0.1  # hidden and embedding dropout
    attention_dropout: float = 0.1  # dropout on attention probabilities
    max_position_embeddings: int = 512  # learned absolute positions
    attention: str = "absolute"  # absolute (BERT) | disentangled (DeBERTa) | relative (Transformer-XL / XLNet)
    positions: Optional[str] = None  # position scheme, one the attention kind accepts (ATTENTION_KINDS); null = its default
    position_biased_input: Optional[bool] = None  # absolute position embeddings at the input; null = the scheme's default
    max_relative_positions: int = -1  # DeBERTa: relative distances clamped at k (-1 = max_position_embeddings)
    position_buckets: Optional[int] = None  # DeBERTa v2/v3: log-bucketed distances (v3: 256); null = exact up to k
    share_att_key: bool = True  # DeBERTa: positions through the content Q/K projections (v3), false = their own
    pos_att_type: list[str] = field(default_factory=lambda: ["c2p", "p2c"])  # DeBERTa terms besides c2c: c2p, p2c
    init_from: Optional[str] = None  # transformers directory (or hub name, online): its sizes, weights, tokenizer
    rope_theta: float = 10000.0  # RoPE base on global layers (ModernBERT 160000, NeoBERT 10000)
    local_rope_theta: Optional[float] = None  # RoPE base on windowed layers; null = rope_theta (ModernBERT 10000)
    norm_bias: bool = True  # LayerNorm bias (ModernBERT: false)
    attention_bias: bool = True  # biases of the Q/K/V and output projections (ModernBERT, NeoBERT: false)
    mlp_bias: bool = True  # biases of the feed-forward matrices (ModernBERT, NeoBERT: false)
    head_bias: bool = True  # bias of the MLM head's dense transform (ModernBERT classifier_bias: false)
    decoder_bias: bool = True  # output bias of the MLM decoder over the vocabulary (ModernBERT: true)
    first_attention_norm: bool = True  # pre-norm: layer 0 normalises its attention input (ModernBERT: false)
    segment_embeddings: bool = True  # a token-type (segment) table at the input (ModernBERT, NeoBERT: false)
    local_window: Optional[int] = None  # local layers attend to |i - j| <= local_window // 2 (ModernBERT 128); null = all global
    global_every: int = 1  # layer i is global when i % global_every == 0, the rest local (ModernBERT 3); 1 = all global

    def __post_init__(self) -> None:
        check_choice("model", "size", self.size, tuple(MODEL_SIZES))
        self.check_kinds()
        self.check_modern()
        check_choice("model", "share_layers", self.share_layers, ("none", "all", "attention", "ffn"))
        for name in ("dropout", "attention_dropout"):
            check_range("model", name, 0 <= getattr(self, name) < 1, "in [0, 1)", getattr(self, name))
        for name in ("num_layers", "hidden_size", "num_heads", "intermediate_size", "embedding_size"):
            value = getattr(self, name)
            if value is not None:
                check_range("model", name, value >= 1, ">= 1", value)
        hidden, heads = self.dims()[1:3]
        check_range("model", "num_heads", hidden % heads == 0, f"a divisor of hidden_size {hidden}", heads)
        if POSITION_SCHEMES[self.position_scheme()].input_embeddings and self.position_biased_input is False:
            in_attention = [k for k, schemes in ATTENTION_KINDS.items() if not POSITION_SCHEMES[schemes[0]].input_embeddings]
            raise ConfigError(f"model.position_biased_input=false leaves model.attention={self.attention} without "
                              f"positions; use attention={' or '.join(in_attention)}")
        check_range("model", "max_relative_positions", self.max_relative_positions == -1 or self.max_relative_positions >= 1,
                    "-1 or >= 1", self.max_relative_positions)
        if self.position_buckets is not None:
            check_range("model", "position_buckets", self.position_buckets >= 2, "a positive count >= 2 (null = off)",
                        self.position_buckets)
        for term in self.pos_att_type:
            check_choice("model", "pos_att_type", term, ("c2p", "p2c"))
        if len(set(self.pos_att_type)) != len(self.pos_att_type):
            raise ConfigError(f"model.pos_att_type={list(self.pos_att_type)} repeats a term; choose a subset of c2p, p2c")

    def check_kinds(self) -> None:
        """The names of kinds and placements (also run by model/config.py EncoderConfig)."""
        if self.norm in ("post", "pre"):  # the placement's old key; model.norm now names the norm kind
            raise ConfigError(f"model.norm={self.norm} is a placement: use model.norm_position={self.norm} "
                              "(model.norm now names the norm kind, e.g. layernorm)")
        check_choice("model", "norm_position", self.norm_position, ("post", "pre"))
        check_choice("model", "attention", self.attention, tuple(ATTENTION_KINDS))
        accepted = ATTENTION_KINDS[self.attention]
        if self.positions is not None and self.positions not in accepted:
            raise ConfigError(f"model.positions={self.positions!r} is not allowed; choose one of {', '.join(accepted)} "
                              f"(the schemes model.attention={self.attention} accepts)")

    def check_modern(self) -> None:
        """RoPE, gated FFNs, ModernBERT's norm placement and local/global layers (issue 17)."""
        _, hidden, heads, intermediate = self.dims()
        if POSITION_SCHEMES[self.position_scheme()].rotary and (hidden // heads) % 2:
            raise ConfigError(f"model.positions=rope needs an even head dimension; hidden_size {hidden} / num_heads "
                              f"{heads} = {hidden // heads}")
        check_range("model", "rope_theta", self.rope_theta > 0, "> 0", self.rope_theta)
        if self.local_rope_theta is not None:
            check_range("model", "local_rope_theta", self.local_rope_theta > 0, "> 0 (null = rope_theta)",
                        self.local_rope_theta)
            if self.position_scheme() != "rope" or self.local_window is None:
                raise ConfigError("model.local_rope_theta applies to windowed layers under RoPE; set model.positions=rope "
                                  "and model.local_window, or leave local_rope_theta null")
        if self.ffn in GATED_FFNS and (intermediate * GATED_FFNS[self.ffn]).denominator != 1:
            share = GATED_FFNS[self.ffn]
            raise ConfigError(f"model.intermediate_size={intermediate} does not divide for model.ffn={self.ffn}: its "
                              f"inner width is {share} of it; use a multiple of {share.denominator}")
        if not self.first_attention_norm and (self.norm_position != "pre" or self.share_layers == "all"):
            raise ConfigError("model.first_attention_norm=false needs model.norm_position=pre and model.share_layers "
                              "other than all (it drops layer 0's attention norm only)")
        check_range("model", "global_every", self.global_every >= 1, ">= 1 (1 = every layer global)", self.global_every)
        if self.local_window is None:
            if self.global_every > 1:
                raise ConfigError(f"model.global_every={self.global_every} needs model.local_window (the window of the "
                                  "local layers)")
            return
        check_range("model", "local_window", self.local_window >= 1, "a positive token count (null = no window)",
                    self.local_window)
        if self.global_every == 1:
            raise ConfigError(f"model.local_window={self.local_window} has no local layer with model.global_every=1; "
                              "set global_every >= 2 (ModernBERT 3)")
        if self.attention != "absolute":
            raise ConfigError(f"model.local_window needs model.attention=absolute (got {self.attention})")
        if self.share_layers in ("all", "attention") and self.local_theta() != self.rope_theta:
            raise ConfigError(f"model.share_layers={self.share_layers} shares one attention over local and global "
                              "layers, which model.local_rope_theta gives different RoPE bases; use share_layers=none or ffn")

    def local_theta(self) -> float:
        """The RoPE base of windowed layers (local_rope_theta, or rope_theta when null)."""
        return self.rope_theta if self.local_rope_theta is None else self.local_rope_theta

    def is_local(self, layer: int) -> bool:
        """Layer `layer` attends within model.local_window (ModernBERT: every layer but each third)."""
        return self.local_window is not None and layer % self.global_every != 0

    def ffn_width(self) -> int:
        """The feed-forward's inner width: intermediate_size, times its share for a gated kind (SwiGLU 2/3)."""
        return int(ModelConfig.dims(self)[3] * GATED_FFNS.get(self.ffn, 1))  # also on a DictConfig (train/flops.py)

    def position_scheme(self) -> str:
        """model.positions resolved: the attention kind's default scheme when null."""
        return self.positions or ATTENTION_KINDS[self.attention][0]

    def biased_input(self) -> bool:
        """position_biased_input resolved: the position scheme's default when null (on for absolute positions)."""
        if self.position_biased_input is None:
            return POSITION_SCHEMES[self.position_scheme()].input_embeddings
        return self.position_biased_input

    def dims(self) -> tuple[int, int, int, int]:
        """(layers, hidden, heads, ffn) after overrides."""
        layers, hidden, heads, ffn = MODEL_SIZES[self.size]
        return (self.num_layers or layers, self.hidden_size or hidden, self.num_heads or heads,
                self.intermediate_size or ffn)


@dataclass
class MaskingConfig:
    mode: str = "dynamic"  # dynamic (redrawn each time, RoBERTa) | static (drawn once per duplicate, BERT)
    unit: str = "token"  # token | word (whole-word) | span (SpanBERT geometric spans)
    rate: float = 0.15  # share of non-special tokens selected for prediction
    mask_prob: float = 0.8  # of selected tokens: replaced by [MASK]
    random_prob: Optional[float] = None  # of selected tokens: replaced by a random token (the rest stay unchanged); null = half of what [MASK] leaves (BERT's 10% at mask_prob 0.8, 0 at 1.0)
    dupe_factor: int = 10  # static: number of differently masked copies of each example
    span_p: float = 0.2  # span: geometric distribution parameter for span length in words
    span_max: int = 10  # span: longest span in words
    fixed_count: bool = False  # select exactly round(rate * n) tokens, n = non-special tokens (static shapes)

    def __post_init__(self) -> None:
        check_choice("masking", "mode", self.mode, ("dynamic", "static"))
        check_choice("masking", "unit", self.unit, ("token", "word", "span"))
        check_range("masking", "rate", 0 < self.rate < 1, "in (0, 1)", self.rate)
        check_range("masking", "mask_prob", 0 <= self.mask_prob <= 1, "in [0, 1]", self.mask_prob)
        check_range("masking", "random_prob", self.random_prob is None or 0 <= self.random_prob <= 1 - self.mask_prob,
               f"in [0, 1 - mask_prob = {1 - self.mask_prob:.2f}]", self.random_prob)
        check_range("masking", "dupe_factor", self.dupe_factor >= 1, ">= 1", self.dupe_factor)
        check_range("masking", "span_p", 0 < self.span_p <= 1, "in (0, 1]", self.span_p)
        check_range("masking", "span_max", self.span_max >= 1, ">= 1", self.span_max)
        check_range("masking", "span_max", self.span_max <= 512, "<= 512 (words; longer spans cover whole examples)",
                    self.span_max)


@dataclass
class ObjectiveConfig:
    sentence: str = "none"  # none (RoBERTa) | nsp (BERT) | sop (ALBERT)
    sbo: bool = False  # SpanBERT span boundary objective (needs masking.unit=span)
    sentence_weight: float = 1.0  # weight of the sentence-task loss
    emd: bool = False  # DeBERTa enhanced mask decoder: absolute positions + the last layer twice before the MLM head
    lm: str = "mlm"  # mlm (masked LM, BERT) | plm (XLNet permutation LM, two streams; needs model.attention=relative) | rtd (ELECTRA replaced-token detection)
    plm_k: int = 6  # plm: predict the last 1/K of each factorisation order (XLNet K=6)
    plm_max_span: int = 5  # plm: targets come in spans of 1..max_span tokens, P(n) ~ 1/n (XLNet max_gram=5)
    rtd_generator_width: float = 0.25  # rtd: generator hidden/heads/FFN as a share of the discriminator's (ELECTRA small 1/4, base 1/3)
    rtd_generator_depth: float = 1.0  # rtd: generator layers as a share of the discriminator's (DeBERTa-v3: 1/2)
    rtd_weight: float = 50.0  # rtd: lambda, weight of the discriminator loss against the generator's MLM (ELECTRA 50, DeBERTa-v3 10)
    rtd_sharing: str = "tied"  # rtd: embedding sharing none | tied (ELECTRA, both gradients) | gdes (DeBERTa-v3, stop-gradient + delta)

    def __post_init__(self) -> None:
        check_choice("objective", "sentence", self.sentence, ("none", "nsp", "sop"))
        check_choice("objective", "lm", self.lm, ("mlm", "plm", "rtd"))
        for name in ("rtd_generator_width", "rtd_generator_depth"):  # a larger generator is refused: it defeats RTD
            check_range("objective", name, 0 < getattr(self, name) <= 1, "in (0, 1] (a share of the discriminator)",
                        getattr(self, name))
        check_range("objective", "rtd_weight", self.rtd_weight > 0, "> 0", self.rtd_weight)
        check_choice("objective", "rtd_sharing", self.rtd_sharing, ("none", "tied", "gdes"))
        check_range("objective", "plm_k", 2 <= self.plm_k <= 64, "in [2, 64]", self.plm_k)
        check_range("objective", "plm_max_span", 1 <= self.plm_max_span <= 32, "in [1, 32]", self.plm_max_span)
        check_range("objective", "sentence_weight", 0 <= self.sentence_weight < float("inf"), ">= 0 and finite",
                    self.sentence_weight)

    def generator_dims(self, dims: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        """rtd: the generator's (layers, hidden, heads, ffn) from the discriminator's `dims`: rtd_generator_width
        of its heads (head size kept), hidden and FFN, rtd_generator_depth of its layers (model/ and flops.py)."""
        layers, hidden, heads, ffn = dims
        gen_heads = max(1, round(heads * self.rtd_generator_width))
        gen_hidden = gen_heads * (hidden // heads)
        return (max(1, round(layers * self.rtd_generator_depth)), gen_hidden, gen_heads,
                max(1, round(ffn * gen_hidden / hidden)))


@dataclass
class OptimConfig:
    lr: float = 1e-3  # peak AdamW learning rate
    weight_decay: float = 0.01  # AdamW weight decay (not on biases and LayerNorm)
    beta1: float = 0.9  # AdamW beta1
    beta2: float = 0.98  # AdamW beta2
    eps: float = 1e-6  # AdamW epsilon
    warmup_steps: int = 50  # linear warmup from 0 to lr
    schedule: str = "linear"  # linear | cosine | constant decay after warmup
    min_lr_ratio: float = 0.0  # final lr as a share of peak lr

    def __post_init__(self) -> None:
        check_choice("optim", "schedule", self.schedule, ("linear", "cosine", "constant"))
        check_range("optim", "lr", 0 < self.lr < 1, "in (0, 1)", self.lr)
        check_range("optim", "warmup_steps", self.warmup_steps >= 0, ">= 0", self.warmup_steps)
        check_range("optim", "min_lr_ratio", 0 <= self.min_lr_ratio <= 1, "in [0, 1]", self.min_lr_ratio)
        # what torch.optim.AdamW refuses (at the first step, after all the data work)
        for name in ("beta1", "beta2"):
            check_range("optim", name, 0 <= getattr(self, name) < 1, "in [0, 1)", getattr(self, name))
        check_range("optim", "eps", 0 <= self.eps < 1, "in [0, 1)", self.eps)
        check_range("optim", "weight_decay", 0 <= self.weight_decay < 1, "in [0, 1)", self.weight_decay)


# Lightning strategies that are tested here (DDP: tests/test_train.py). FSDP and DeepSpeed are refused.
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_fork", "ddp_notebook", "ddp_find_unused_parameters_true",
              "single_device")


@dataclass
class TrainerConfig:
    max_steps: int = 600  # optimizer steps
    max_tokens: Optional[int] = None  # budget in training tokens; sets max_steps (equal compute in sweeps)
    max_flops: Optional[float] = None  # budget in model training FLOPs (train/flops.py); sets max_steps (equal compute across objectives)
    batch_size: int = 32  # examples per device per step
    accumulate_grad_batches: int = 1  # micro-batches per optimizer step
    precision: str = "32-true"  # Lightning precision: 32-true | bf16-mixed | 16-mixed | bf16-true
    accelerator: str = "auto"  # cpu | gpu | auto
    devices: int = 1  # devices per node
    num_nodes: int = 1  # nodes (torchrun / SLURM environment)
    strategy: str = "auto"  # auto | ddp | ddp_spawn | ddp_fork | ddp_find_unused_parameters_true (see STRATEGIES)
    gradient_clip_val: float = 1.0  # clip gradient norm (0 = off)
    val_check_interval: int = 100  # validate every N optimizer steps
    limit_val_batches: int = 20  # validation batches per check
    log_every_n_steps: int = 10  # training metric rows
    checkpoint_every_n_steps: int = 100  # save last.ckpt every N steps (resume point)
    skip_nonfinite: int = 0  # skip up to N steps with a non-finite loss or gradient norm, then stop (diverged)
    compile: bool = False  # torch.compile the encoder (GPU: fewer kernels; first steps pay the compile time)
    peak_flops: Optional[float] = None  # peak FLOP/s per device for train/mfu; None = lightning_bert.train.flops GPU table

    def __post_init__(self) -> None:
        check_choice("trainer", "precision", self.precision, ("32-true", "32", "bf16-mixed", "16-mixed", "bf16-true"))
        check_choice("trainer", "accelerator", self.accelerator, ("auto", "cpu", "gpu", "cuda", "mps"))
        for name in ("max_steps", "batch_size", "accumulate_grad_batches", "devices", "num_nodes",
                     "val_check_interval", "log_every_n_steps", "checkpoint_every_n_steps"):
            check_range("trainer", name, getattr(self, name) >= 1, ">= 1", getattr(self, name))
        # 0 = no validation (what the zero-step refusal suggests for a run without held-out examples)
        check_range("trainer", "limit_val_batches", self.limit_val_batches >= 0, ">= 0", self.limit_val_batches)
        check_range("trainer", "gradient_clip_val", 0 <= self.gradient_clip_val < float("inf"), ">= 0 (0 = off)",
                    self.gradient_clip_val)
        check_range("trainer", "skip_nonfinite", self.skip_nonfinite >= 0, ">= 0", self.skip_nonfinite)
        if self.max_tokens is not None:
            check_range("trainer", "max_tokens", self.max_tokens >= 1, ">= 1", self.max_tokens)
        if self.max_flops is not None:
            check_range("trainer", "max_flops", self.max_flops > 0, "> 0 (FLOPs, e.g. 1e15)", self.max_flops)
            if self.max_tokens is not None:
                raise ConfigError("trainer.max_flops and trainer.max_tokens are both set; give one budget")
        if self.peak_flops is not None:
            check_range("trainer", "peak_flops", self.peak_flops > 0, "> 0 (FLOP/s, e.g. 989e12)", self.peak_flops)
        if self.strategy.startswith(("fsdp", "deepspeed")):  # untested here: refused rather than half-working
            raise ConfigError(f"trainer.strategy={self.strategy} is not supported (only data parallel is tested); "
                              f"choose one of {', '.join(STRATEGIES)}")
        check_choice("trainer", "strategy", self.strategy, STRATEGIES)


@dataclass
class WandbConfig:
    mode: str = "auto"  # auto (online with an API key, else offline) | online | offline | disabled
    project: str = "lightning-bert"  # W&B project
    entity: Optional[str] = None  # W&B entity (team or user)
    group: Optional[str] = None  # W&B group (env WANDB_RUN_GROUP also sets it): the ablation name
    tags: list[str] = field(default_factory=list)  # W&B tags
    init_timeout: int = 30  # seconds to reach the server before falling back to offline

    def __post_init__(self) -> None:
        check_choice("logger.wandb", "mode", self.mode, ("auto", "online", "offline", "disabled"))
        check_range("logger.wandb", "init_timeout", self.init_timeout >= 1, ">= 1 (seconds)", self.init_timeout)


@dataclass
class LoggerConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)


# GLUE task names (lightning_bert/glue.py TASKS; a test keeps the two in step) plus the STS embedding probes.
DOWNSTREAM = ("cola", "sst2", "mrpc", "rte", "stsb", "wnli", "sts")


@dataclass
class EvalConfig:
    downstream: list[str] = field(default_factory=list)  # after pretraining: glue task names and/or "sts"
    glue_dir: str = "../shared/data/glue"  # GLUE TSV directory (or "hf" for Hugging Face nyu-mll/glue)
    glue_seeds: int = 1  # fine-tuning seeds per task (median reported)
    probes: bool = True  # NSP and SOP cross-probe accuracies in the summary (ALBERT Table 5)
    max_train_examples: Optional[int] = 4000  # cap per GLUE task after pretraining (None = full train sets)

    def __post_init__(self) -> None:
        for name in self.downstream:
            check_choice("eval", "downstream", name.removeprefix("glue:"), DOWNSTREAM)
        # checked here, under these names: fine-tuning (finetune.FinetuneConfig) only runs after pretraining
        check_range("eval", "glue_seeds", self.glue_seeds >= 1, ">= 1", self.glue_seeds)
        if self.max_train_examples is not None:
            check_range("eval", "max_train_examples", self.max_train_examples >= 1, ">= 1 (null = full train sets)",
                        self.max_train_examples)


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        self._check_positions()
        if self.objective.sbo and self.masking.unit != "span":
            raise ConfigError("objective.sbo=true needs masking.unit=span")
        self._check_relative_table()
        self._check_plm()
        self._check_rtd()
        if self.data.pack_attention == "document" and self.objective.sentence != "none":
            raise ConfigError(f"data.pack_attention=document needs objective.sentence=none: "
                              f"{self.objective.sentence} pairs are not packed, so there are no documents to mask apart")
        if self.model.local_window is not None and self.model.local_window > self.data.max_seq_length:
            raise ConfigError(f"model.local_window={self.model.local_window} is larger than the sequence "
                              f"(data.max_seq_length={self.data.max_seq_length}); use at most the sequence length")
        if self.data.backend == "hf_streaming":  # lightning_bert/data/streaming.py: packed rows, dynamic masks
            unsupported = [f"{k}={v}" for k, v, ok in (
                ("objective.sentence", self.objective.sentence, "none"), ("masking.mode", self.masking.mode, "dynamic"),
                ("objective.lm", self.objective.lm, "mlm")) if v != ok]
            if unsupported:
                raise ConfigError(f"data.backend=hf_streaming serves packed examples with dynamic MLM masks; "
                                  f"not {', '.join(unsupported)}")
            if not self.data.valid_path:
                raise ConfigError("data.backend=hf_streaming needs data.valid_path=[held-out files] for validation and "
                                  "the canonical evaluation (a stream holds no held-out block)")

    def _check_positions(self) -> None:
        """Learned absolute positions must cover the longest example (an index error in the first step otherwise)."""
        count = self.model.max_position_embeddings
        check_range("model", "max_position_embeddings", 1 <= count <= 65536, "in [1, 65536]", count)
        if self.model.biased_input() and self.data.max_seq_length > count:
            raise ConfigError(f"data.max_seq_length={self.data.max_seq_length} is longer than "
                              f"model.max_position_embeddings={count} learned positions; it must be <= {count}")

    def _check_plm(self) -> None:
        """XLNet's permutation LM: two streams need relative positions; no sentence task, SBO or EMD on top."""
        scheme = POSITION_SCHEMES[self.model.position_scheme()]
        if scheme.sin_cos and self.model.dims()[1] % 2:
            raise ConfigError(f"model.hidden_size={self.model.dims()[1]} is odd; model.attention={self.model.attention} "
                              f"needs an even hidden size (sin/cos pairs)")
        if self.objective.lm != "plm":
            return
        if not scheme.query_positions:
            able = [k for k, schemes in ATTENTION_KINDS.items() if any(POSITION_SCHEMES[p].query_positions for p in schemes)]
            raise ConfigError(f"objective.lm=plm needs model.attention={' or '.join(able)} (got {self.model.attention!r}): "
                              "the query stream has no position of its own without relative positions")
        if self.objective.sentence != "none":
            raise ConfigError(f"objective.sentence={self.objective.sentence} is not allowed with objective.lm=plm; "
                              "use objective.sentence=none (XLNet dropped NSP)")
        for name in ("sbo", "emd"):
            if getattr(self.objective, name):
                raise ConfigError(f"objective.{name}=true is not allowed with objective.lm=plm (an MLM head); "
                                  f"use objective.{name}=false")
        k, length = self.objective.plm_k, self.data.max_seq_length
        check_range("data", "max_seq_length", length >= 4 * k, f">= 4 * objective.plm_k = {4 * k} with "
                    "objective.lm=plm (a few targets per sequence)", length)

    def _check_rtd(self) -> None:
        """Replaced-token detection runs both encoders itself: no sentence task, SBO or EMD beside it."""
        if self.objective.lm != "rtd":
            return
        if self.objective.sentence != "none":
            raise ConfigError(f"objective.sentence={self.objective.sentence} is not allowed with objective.lm=rtd; "
                              "use objective.sentence=none (ELECTRA has no sentence task)")
        for name in ("sbo", "emd"):
            if getattr(self.objective, name):
                raise ConfigError(f"objective.{name}=true is not allowed with objective.lm=rtd (the discriminator has "
                                  f"no MLM head); use objective.{name}=false")

    def _check_relative_table(self) -> None:
        """DeBERTa's relative table must fit the longest sequence, and log buckets need room to grow."""
        longest = max(self.model.max_position_embeddings, self.data.max_seq_length)
        k = self.model.max_relative_positions
        if k > longest:
            raise ConfigError(f"model.max_relative_positions={k} is larger than the sequence allows; it must be -1 "
                              f"or in [1, {longest}] (max of model.max_position_embeddings and data.max_seq_length)")
        buckets, k = self.model.position_buckets, (k if k >= 1 else longest)
        if buckets is not None and buckets // 2 >= k - 1:
            raise ConfigError(f"model.position_buckets={buckets} is too many for distances up to "
                              f"max_relative_positions={k}; it must be below {2 * (k - 1)}")


def experiment_names() -> list[str]:
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))


def parse_overrides(overrides: Sequence[str]) -> tuple[Optional[str], list[str]]:
    experiment, rest = None, []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not key=value (e.g. trainer.max_steps=100)")
        key, value = item.split("=", 1)
        key = key.lstrip("-").lstrip("+")
        if key in ("experiment", "run.experiment"):
            experiment = value
        elif key in ("data.path", "data.valid_path") and not value.startswith("["):
            rest.append(f"{key}=[{value}]")  # one path given as a plain value
        else:
            rest.append(f"{key}={value}")
    return experiment, rest


def upgrade_config(config: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's config in today's schema. Up to main a15e608, model.norm named the placement
    (post|pre), now model.norm_position; keys added since take their defaults, which reproduce the old model."""
    model = dict(config.get("model", {}))
    if model.get("norm") in ("post", "pre"):
        model["norm_position"] = model.pop("norm")
    return {**config, "model": {**dataclasses.asdict(ModelConfig()), **model}}


def load(overrides: Sequence[str] = (), experiment: Optional[str] = None,
         base: Optional[dict[str, Any]] = None) -> DictConfig:
    """Defaults <- `base` (e.g. a checkpoint's config) <- experiments/NAME.yaml <- dotlist overrides.

    Validated; raises ConfigError naming the key and what is allowed.
    """
    named, dotlist = parse_overrides(overrides)
    experiment = named or experiment
    try:
        cfg = OmegaConf.structured(Config)
        if base:
            cfg = OmegaConf.merge(cfg, upgrade_config(base))
        if experiment:
            preset = EXPERIMENTS_DIR / f"{experiment}.yaml"
            if not preset.is_file():
                raise ConfigError(f"unknown experiment '{experiment}'; choose one of {', '.join(experiment_names())}")
            cfg = OmegaConf.merge(cfg, OmegaConf.load(preset))
            cfg.run.experiment = experiment
        for item in dotlist:  # one at a time: a merge's TypeError does not say which key it was
            try:
                cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([item]))
            except TypeError as err:  # a mapping given for a list or a value ("Cannot merge incompatible ...")
                raise ConfigError(f"bad value for '{item.split('=', 1)[0]}': {err}") from None
        check_list_items(cfg, Config)
        OmegaConf.to_object(cfg)  # runs every __post_init__ check
    except OmegaConfBaseException as err:
        raise explain(err, Config, "config") from None
    return cfg


def check_list_items(cfg: DictConfig, schema: type, prefix: str = "") -> None:
    """Lists of the schema hold plain values (OmegaConf does not check the items of a `list[str]` field)."""
    for f in dataclasses.fields(schema):
        value = cfg.get(f.name)
        if dataclasses.is_dataclass(f.default_factory):  # type: ignore[arg-type]
            check_list_items(value, f.default_factory, f"{prefix}{f.name}.")  # type: ignore[arg-type]
        elif str(f.type).startswith("list[") and value is not None:
            nested = [item for item in value if OmegaConf.is_config(item)]
            if nested:
                raise ConfigError(f"bad value for '{prefix}{f.name}': {OmegaConf.to_container(nested[0])} is not a "
                                  "plain value; give a list of strings, e.g. [a, b]")


def describe() -> str:
    """Every key with its default and its one-line comment, read from this schema's source."""
    return describe_schema(Config)


def to_dict(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
