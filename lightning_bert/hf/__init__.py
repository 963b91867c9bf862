"""Hugging Face interop: which transformers architecture a config maps to, and the plumbing around the
weight maps (hf/bert.py: BERT, ALBERT, RoBERTa-PreLayerNorm; hf/deberta.py; hf/xlnet.py).

Each map module exposes plain functions, importing transformers lazily inside hf_config() only:
    hf_config(cfg, **extra) -> PretrainedConfig, to_hf(state, cfg) -> dict, from_hf(state, cfg) -> dict
and, for import, `encoder_kwargs(config_json: dict) -> EncoderConfig fields`.

- export_dir(): checkpoint -> config.json + model.safetensors + fast tokenizer files (+ sentence-transformers);
- load_dir(): a transformers directory (or hub name, online) -> our encoder config, weights and tokenizer,
  the vocabulary reordered so that our special tokens are ids 0-4 (the data pipeline's one source of truth).
"""
from __future__ import annotations

import importlib
import json
import logging
import shutil
from dataclasses import dataclass, fields
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from lightning_bert.errors import UserError
from lightning_bert.model.config import EncoderConfig

log = logging.getLogger(__name__)

# our attention kind -> the module holding its map, and the architecture it exports as
ATTENTION_MAPS = {"absolute": "bert", "disentangled": "deberta", "relative": "xlnet"}
DEFAULT_ARCHITECTURE = {"deberta": "DebertaV2ForMaskedLM", "xlnet": "XLNetLMHeadModel"}
# transformers model_type -> our map module (import)
MODEL_TYPES = {"bert": "bert", "albert": "bert", "roberta-prelayernorm": "bert", "deberta-v2": "deberta",
               "xlnet": "xlnet"}
ROLES = ("pad", "unk", "cls", "sep", "mask")  # in the order of data/tokenizer.py SPECIAL_TOKENS
# objectives transformers has no place for: dropped on export, with this notice
DROPPED = {"emd": "DeBERTa's enhanced mask decoder (EMD) is dropped: transformers has no EMD",
           "sbo": "SpanBERT's span boundary head is dropped: transformers has no SBO head"}


def map_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(f"lightning_bert.hf.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"lightning_bert.hf.{name}":
            raise
        raise UserError(f"no transformers weight map for {name} yet (lightning_bert/hf/{name}.py is not built)") from None


def module_for(cfg: EncoderConfig) -> ModuleType:
    """Architecture choice by our config: the attention kind picks the map module."""
    if cfg.attention not in ATTENTION_MAPS:
        raise UserError(f"model.attention={cfg.attention} has no transformers export; "
                        f"supported: {', '.join(ATTENTION_MAPS)}")
    return map_module(ATTENTION_MAPS[cfg.attention])


def architecture(module: ModuleType, cfg: EncoderConfig, state: dict[str, Tensor]) -> str:
    if hasattr(module, "architecture"):
        return module.architecture(cfg, state)
    if module.__name__.endswith(".bert"):
        with_pair, mlm_only = module.ARCHITECTURES[module.layout(cfg)]
        return with_pair if module.pair_head(state) else mlm_only
    return DEFAULT_ARCHITECTURE[module.__name__.rsplit(".", 1)[1]]


# ---------------------------------------------------------------------------------------------- export


def hf_model_from_checkpoint(ckpt: dict[str, Any], cfg: EncoderConfig) -> Any:
    """A transformers model holding the checkpoint's weights (MLM head, pooler and pair head where they fit)."""
    import transformers

    module = module_for(cfg)
    state = {k: v.float() for k, v in ckpt["state_dict"].items()}
    arch = architecture(module, cfg, state)
    for marker, notice in DROPPED.items():  # e.g. objectives.mlm.emd.* or objectives.sbo.*
        if any(f".{marker}." in k for k in state if k.startswith("objectives.")):
            log.warning(notice)
    pair = next((n for n in ("nsp", "sop") if f"objectives.{n}.head.pooler.weight" in state), None)
    if pair and not arch.endswith("PreTraining"):
        log.warning("the %s head is dropped: %s has no pooler or pair head", pair, arch)
    hf_cfg = module.hf_config(cfg, architectures=[arch])
    model = getattr(transformers, arch)(hf_cfg).eval()
    mapped = module.to_hf(state, cfg)
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    missing = [k for k in missing if not k.endswith(("position_ids", "token_type_ids"))]
    if missing or unexpected:  # a map bug, not a user error: say exactly what is off
        raise RuntimeError(f"weight map for {arch} is incomplete: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model


def fast_tokenizer(tokenizer_json: str, max_length: int) -> Any:
    """Our tokenizers.Tokenizer as a transformers fast tokenizer: [CLS] A [SEP] (B [SEP]) added, as ours."""
    import transformers
    from tokenizers import Tokenizer, processors

    from lightning_bert.data.tokenizer import SPECIAL_TOKENS

    tok = Tokenizer.from_str(tokenizer_json)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    tok.no_padding()
    tok.no_truncation()
    pad, unk, cls, sep, mask = SPECIAL_TOKENS
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=pad, unk_token=unk, cls_token=cls, sep_token=sep, mask_token=mask,
        model_max_length=max_length, model_input_names=["input_ids", "token_type_ids", "attention_mask"])


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
    from omegaconf import OmegaConf

    from lightning_bert.checkpoint import encoder_config, read_checkpoint
    from lightning_bert.eval.embeddings import POOLINGS

    if pooling not in POOLINGS:
        raise UserError(f"--pooling {pooling} is not allowed; choose one of {', '.join(POOLINGS)}")
    ckpt = read_checkpoint(ckpt_path)  # one-line UserError for a missing or corrupt file
    run_cfg = OmegaConf.create(ckpt["hyper_parameters"]["config"])
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_str(ckpt["tokenizer"]).get_vocab_size()
    cfg = encoder_config(run_cfg, vocab)
    model = hf_model_from_checkpoint(ckpt, cfg)  # fails (one line) before anything is written
    out = prepare_out_dir(out_dir, overwrite)
    model.save_pretrained(out, safe_serialization=True)
    fast_tokenizer(ckpt["tokenizer"], cfg.max_position_embeddings).save_pretrained(out)
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


# ---------------------------------------------------------------------------------------------- import


@dataclass
class HFInit:
    """What a transformers directory gives a pretraining run."""

    source: str
    encoder: dict[str, Any]  # EncoderConfig fields (sizes decided by the directory)
    state: dict[str, Tensor]  # our PretrainModule names: encoder.*, objectives.mlm.head.* (+ pair head)
    tokenizer: Any  # tokenizers.Tokenizer, special tokens at ids 0-4

    def load_into(self, module: torch.nn.Module) -> None:
        """Copy the weights into a PretrainModule; heads the directory lacks keep their fresh init."""
        own = module.state_dict()
        pair = next((n for n in ("nsp", "sop") if f"objectives.{n}.head.pooler.weight" in own), None)
        state = {k.replace("objectives.nsp.head.", f"objectives.{pair}.head.") if pair else k: v
                 for k, v in self.state.items()}  # the directory's pair head serves the run's NSP or SOP
        for name, tensor in state.items():
            if name in own and own[name].shape != tensor.shape:
                raise UserError(f"model.init_from={self.source}: {name} has shape {tuple(tensor.shape)}, "
                                f"the model expects {tuple(own[name].shape)}")
        result = module.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
        fresh = sorted({k.split(".")[1] for k in result.missing_keys if k.startswith("objectives.")})
        if any(k.startswith("encoder.") for k in result.missing_keys):
            raise UserError(f"model.init_from={self.source}: encoder weights missing: {result.missing_keys[:3]}")
        log.info("initialised from %s%s", self.source, f" (fresh heads: {', '.join(fresh)})" if fresh else "")


def resolve_dir(source: str) -> Path:
    """A local directory, or a hub name downloaded (online) the way from_pretrained does."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists() or source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise UserError(f"model.init_from={source}: no such directory")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]))
    except Exception as err:  # noqa: BLE001 - offline, unknown repo, no access: one line
        raise UserError(f"model.init_from={source}: not a local directory and the hub download failed "
                        f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None


def read_weights(path: Path) -> dict[str, Tensor]:
    if (path / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(str(path / "model.safetensors"))
    index = path / "model.safetensors.index.json"
    if index.is_file():
        from safetensors.torch import load_file

        state: dict[str, Tensor] = {}
        for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
            state.update(load_file(str(path / shard)))
        return state
    if (path / "pytorch_model.bin").is_file():
        return torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise UserError(f"model.init_from={path}: no model.safetensors or pytorch_model.bin")


def special_tokens(path: Path) -> dict[str, str]:
    """Role -> token string, from tokenizer_config.json / special_tokens_map.json (ours by default)."""
    from lightning_bert.data.tokenizer import SPECIAL_TOKENS

    roles = dict(zip(ROLES, SPECIAL_TOKENS))
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        if (path / name).is_file():
            for role in ROLES:
                value = json.loads((path / name).read_text()).get(f"{role}_token")
                value = value.get("content") if isinstance(value, dict) else value
                if value:
                    roles[role] = value
    return roles


def canonical_tokenizer(tokenizer_json: dict[str, Any], roles: dict[str, str]) -> tuple[str, list[int]]:
    """Rename and reorder a tokenizer.json so our special tokens are ids 0-4 with our names.

    Returns (new json, perm) with perm[new id] = old id, to reorder embedding rows and the MLM bias.
    """
    from lightning_bert.data.tokenizer import SPECIAL_TOKENS

    tj = json.loads(json.dumps(tokenizer_json))
    model = tj["model"]
    kind = model["type"]
    if kind == "Unigram":
        pieces = [p for p, _ in model["vocab"]]
    elif kind in ("WordPiece", "BPE"):
        pieces = [None] * len(model["vocab"])
        for piece, i in model["vocab"].items():
            pieces[i] = piece
    else:
        raise UserError(f"tokenizer model {kind} is not supported (WordPiece, BPE or Unigram)")
    extra = {t["id"]: t["content"] for t in tj.get("added_tokens", []) if t["id"] >= len(pieces)}
    size = max([len(pieces) - 1, *extra]) + 1
    names = pieces + [extra.get(i) for i in range(len(pieces), size)]
    where = {name: i for i, name in enumerate(names) if name is not None}
    old_special = []
    for role, ours in zip(ROLES, SPECIAL_TOKENS):
        token = roles[role] if roles[role] in where else ours
        if token not in where:
            raise UserError(f"the tokenizer has no {role} token ({roles[role]!r}); our pipeline needs {ours}")
        old_special.append(where[token])
    perm = old_special + [i for i in range(size) if i not in old_special]
    renamed = {old: ours for old, ours in zip(old_special, SPECIAL_TOKENS)}
    new_names = [renamed.get(old, names[old]) for old in perm]
    clash = {n for i, n in enumerate(new_names[len(SPECIAL_TOKENS):]) if n in SPECIAL_TOKENS}
    if clash:
        raise UserError(f"the tokenizer has {', '.join(clash)} as an ordinary token; cannot map special tokens")
    if kind == "Unigram":
        scores = [s for _, s in model["vocab"]]
        model["vocab"] = [[new_names[i], scores[perm[i]] if perm[i] < len(pieces) else 0.0] for i in range(size)]
        model["unk_id"] = 1
    else:
        model["vocab"] = {new_names[i]: i for i in range(size)}
        if "unk_token" in model and model["unk_token"] is not None:
            model["unk_token"] = SPECIAL_TOKENS[1]
    tj["added_tokens"] = [{"id": i, "content": new_names[i], "single_word": False, "lstrip": False, "rstrip": False,
                           "normalized": False, "special": True} for i in range(len(SPECIAL_TOKENS))]
    tj["post_processor"], tj["padding"], tj["truncation"] = None, None, None  # the pipeline adds [CLS]/[SEP]
    return json.dumps(tj), perm


def _xlnet_kwargs(hf: dict[str, Any]) -> dict[str, Any]:
    """EncoderConfig fields from an XLNet config.json (hf/xlnet.py has the weight map, not this part)."""
    if hf.get("attn_type", "bi") != "bi" or hf.get("ff_activation", "gelu") != "gelu":
        raise UserError("XLNet configs need attn_type=bi and ff_activation=gelu")
    return dict(vocab_size=hf["vocab_size"], hidden_size=hf["d_model"], num_layers=hf["n_layer"],
                num_heads=hf["n_head"], intermediate_size=hf["d_inner"], dropout=hf.get("dropout", 0.1),
                attention_dropout=hf.get("dropout", 0.1), layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
                max_position_embeddings=512, attention="relative", position_biased_input=False)


FALLBACK_KWARGS = {"xlnet": _xlnet_kwargs}  # model_type -> encoder_kwargs where the map module has none


def load_dir(source: str) -> HFInit:
    """A transformers directory -> HFInit (our encoder fields, weights in our names, tokenizer)."""
    from tokenizers import Tokenizer

    path = resolve_dir(source)
    if not (path / "config.json").is_file():
        raise UserError(f"model.init_from={source}: no config.json (not a transformers model directory)")
    hf = json.loads((path / "config.json").read_text())
    model_type = hf.get("model_type")
    if model_type not in MODEL_TYPES:
        raise UserError(f"model.init_from={source}: model_type {model_type!r} is not supported; "
                        f"supported: {', '.join(sorted(MODEL_TYPES))}")
    module = map_module(MODEL_TYPES[model_type])
    kwargs_of = getattr(module, "encoder_kwargs", None) or FALLBACK_KWARGS.get(model_type)
    if kwargs_of is None:
        raise UserError(f"model.init_from={source}: importing {model_type} is not built yet")
    kwargs = kwargs_of(hf)
    if model_type == "xlnet":
        log.warning("XLNet imports up to hf/xlnet.py's input fold (its word table comes back under a neutral "
                    "input LayerNorm), so outputs are close to, not equal to, the directory's")
    if hf.get("hidden_act", "gelu") != "gelu":
        log.warning("%s uses hidden_act=%s; ours is exact gelu, so outputs differ slightly", source, hf["hidden_act"])
    if not (path / "tokenizer.json").is_file():
        raise UserError(f"model.init_from={source}: no tokenizer.json (a fast tokenizer is needed)")
    tok_json, perm = canonical_tokenizer(json.loads((path / "tokenizer.json").read_text()), special_tokens(path))
    tokenizer = Tokenizer.from_str(tok_json)
    vocab = tokenizer.get_vocab_size()
    if vocab != kwargs["vocab_size"]:
        raise UserError(f"model.init_from={source}: the tokenizer has {vocab} tokens, config.json vocab_size="
                        f"{kwargs['vocab_size']}; they must agree")
    cfg = EncoderConfig(**{k: v for k, v in kwargs.items() if k in {f.name for f in fields(EncoderConfig)}})
    weights = read_weights(path)
    state = module.from_hf({k: v.float() for k, v in weights.items()}, cfg)
    order = torch.tensor(perm)
    for name in ("encoder.embeddings.word_embeddings.weight", "objectives.mlm.head.bias"):
        if name in state:
            state[name] = state[name][order].contiguous()
    if "objectives.mlm.head.decoder_weight" in state:
        state["objectives.mlm.head.decoder_weight"] = state["encoder.embeddings.word_embeddings.weight"]
    types = state["encoder.embeddings.token_type_embeddings.weight"]
    if types.shape[0] != cfg.type_vocab_size or types.shape[0] < 2:  # RoBERTa has one segment: B reuses it
        state["encoder.embeddings.token_type_embeddings.weight"] = torch.cat([types, types])[:2]
        kwargs["type_vocab_size"] = 2
    return HFInit(source, kwargs, state, tokenizer)

