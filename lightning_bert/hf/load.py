"""Transformers directory (or hub name, online) -> our encoder config, weights and tokenizer (model.init_from).

The adapter is picked by config.json's model_type (hf/registry.py); the vocabulary is reordered so that our
special tokens are ids 0-4 (the data pipeline's one source of truth).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer
from torch import Tensor

from lightning_bert.data.tokenizer import SPECIAL_TOKENS
from lightning_bert.errors import UserError
from lightning_bert.hf.adapter import pair_head
from lightning_bert.hf.registry import importer
from lightning_bert.model.config import EncoderConfig

log = logging.getLogger(__name__)

ROLES = ("pad", "unk", "cls", "sep", "mask")  # in the order of data/tokenizer.py SPECIAL_TOKENS


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
        pair = pair_head(own)
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


def read_json(path: Path, source: str) -> Any:
    """A JSON file of the directory, or one line saying which one is not JSON."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"model.init_from={source}: {path.name} is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise UserError(f"model.init_from={source}: {path.name} is not a JSON object")
    return data


def special_tokens(path: Path) -> dict[str, str]:
    """Role -> token string, from tokenizer_config.json / special_tokens_map.json (ours by default)."""
    roles = dict(zip(ROLES, SPECIAL_TOKENS))
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        if (path / name).is_file():
            for role in ROLES:
                value = read_json(path / name, str(path)).get(f"{role}_token")
                value = value.get("content") if isinstance(value, dict) else value
                if value:
                    roles[role] = value
    return roles


def canonical_tokenizer(tokenizer_json: dict[str, Any], roles: dict[str, str]) -> tuple[str, list[int]]:
    """Rename and reorder a tokenizer.json so our special tokens are ids 0-4 with our names.

    Returns (new json, perm) with perm[new id] = old id, to reorder embedding rows and the MLM bias.
    """
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


def load_dir(source: str) -> HFInit:
    """A transformers directory -> HFInit (our encoder fields, weights in our names, tokenizer)."""
    path = resolve_dir(source)
    if not (path / "config.json").is_file():
        raise UserError(f"model.init_from={source}: no config.json (not a transformers model directory)")
    hf = read_json(path / "config.json", source)
    adapter = importer(hf.get("model_type"), source)
    try:
        kwargs = adapter.encoder_kwargs(hf)
    except (KeyError, TypeError, ValueError) as err:  # a config.json without the fields its model_type needs
        raise UserError(f"model.init_from={source}: config.json has no usable {err} for model_type "
                        f"{hf.get('model_type')}") from None
    if adapter.import_notice:
        log.warning(adapter.import_notice)
    if hf.get("hidden_act", "gelu") != "gelu":
        log.warning("%s uses hidden_act=%s; ours is exact gelu, so outputs differ slightly", source, hf["hidden_act"])
    if not (path / "tokenizer.json").is_file():
        raise UserError(f"model.init_from={source}: no tokenizer.json (a fast tokenizer is needed)")
    try:  # a tokenizer.json of the wrong shape fails in canonical_tokenizer or inside tokenizers (Rust)
        tok_json, perm = canonical_tokenizer(read_json(path / "tokenizer.json", source), special_tokens(path))
        tokenizer = Tokenizer.from_str(tok_json)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - tokenizers raises plain Exception
        raise UserError(f"model.init_from={source}: tokenizer.json is not a tokenizer "
                        f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    vocab = tokenizer.get_vocab_size()
    if vocab != kwargs["vocab_size"]:
        raise UserError(f"model.init_from={source}: the tokenizer has {vocab} tokens, config.json vocab_size="
                        f"{kwargs['vocab_size']}; they must agree")
    cfg = EncoderConfig(**kwargs)
    try:  # a truncated or foreign weights file: safetensors, torch and pickle raise their own types
        weights = read_weights(path)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001
        raise UserError(f"model.init_from={source}: the weights cannot be read, the file is damaged or not what "
                        f"its name says ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    state = adapter.from_hf({k: v.float() for k, v in weights.items()}, cfg)
    order = torch.tensor(perm)
    for name in ("encoder.embeddings.word_embeddings.weight", "objectives.mlm.head.bias"):
        if name in state:
            state[name] = state[name][order].contiguous()
    if "objectives.mlm.head.decoder_weight" in state:
        state["objectives.mlm.head.decoder_weight"] = state["encoder.embeddings.word_embeddings.weight"]
    types = state.get("encoder.embeddings.token_type_embeddings.weight")  # none without segment embeddings
    if types is not None and (types.shape[0] != cfg.type_vocab_size or types.shape[0] < 2):  # RoBERTa has one segment: B reuses it
        state["encoder.embeddings.token_type_embeddings.weight"] = torch.cat([types, types])[:2]
        kwargs["type_vocab_size"] = 2
    return HFInit(source, kwargs, state, tokenizer)

