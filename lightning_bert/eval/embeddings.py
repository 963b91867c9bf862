"""Sentence embeddings from a pretrained encoder (the Sentence-BERT questions), with no fine-tuning:
pooling (cls | mean | eos, optionally L2-normalised), zero-shot STS-B dev Spearman, anisotropy.

Note: both probes use cosine similarity, which ignores vector length, so L2 normalisation leaves
them unchanged; the `_norm` rows are kept so that the table covers every pooling choice a user may pick.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_bert.eval.glue import collate_encoded, encode, read_task

log = logging.getLogger(__name__)

POOLINGS = ("cls", "mean", "eos")


def pool(hidden: Tensor, attention_mask: Tensor, how: str = "mean", normalize: bool = False) -> Tensor:
    """Hidden states [B, L, H] + mask [B, L] (1 = token) -> sentence embeddings [B, H]."""
    mask = attention_mask.to(hidden.dtype)
    if how == "cls":
        out = hidden[:, 0]
    elif how == "mean":  # padding must not dilute the average
        out = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
    elif how == "eos":  # last non-padding token (the final [SEP]); argmax of mask * position finds it
        positions = torch.arange(hidden.shape[1], device=hidden.device, dtype=hidden.dtype)
        out = hidden[torch.arange(hidden.shape[0], device=hidden.device), (mask * positions).argmax(1)]
    else:
        raise ValueError(f"unknown pooling '{how}'; choose one of {', '.join(POOLINGS)}")
    return F.normalize(out, dim=-1) if normalize else out


def _cosine(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise cosine in float64, clipped to [-1, 1], so identical vectors give exactly 1."""
    a, b = F.normalize(a.double(), dim=-1), F.normalize(b.double(), dim=-1)
    return (a * b).sum(-1).clamp(-1.0, 1.0)


def anisotropy(emb: Tensor, num_pairs: int = 2000, generator: torch.Generator | None = None) -> float:
    """Mean cosine similarity of `num_pairs` random pairs of distinct rows of emb [N, H] (N >= 2)."""
    n = emb.shape[0]
    i = torch.randint(n, (num_pairs,), generator=generator)
    j = (i + torch.randint(1, n, (num_pairs,), generator=generator)) % n  # never pairs a row with itself
    return float(_cosine(emb[i], emb[j]).mean())


@torch.inference_mode()
def embed(encoder: nn.Module, tokenizer: Any, texts: Sequence[str], poolings: Sequence[str] = POOLINGS,
          batch_size: int = 128, max_length: int = 128) -> dict[str, Tensor]:
    """Unnormalised embeddings [N, H] per pooling, from one encoder pass; batches sorted by length."""
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    features = encode(tokenizer, [(t, None, 0) for t in texts], max_length)
    order = sorted(range(len(texts)), key=lambda k: len(features[k][0]))  # little padding per batch
    out = {how: torch.empty(len(texts), encoder.config.hidden_size) for how in poolings}
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        batch = {k: v.to(device) for k, v in collate_encoded([features[r] for r in rows]).items()}
        hidden = encoder(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]).float()
        for how in poolings:
            out[how][rows] = pool(hidden, batch["attention_mask"], how).cpu()
    encoder.train(was_training)
    return out


def spearman(x: Tensor, y: Tensor) -> float:
    from torchmetrics.functional import spearman_corrcoef

    return float(spearman_corrcoef(x.double(), y.double()))


def sts_zero_shot(encoder: nn.Module, tokenizer: Any, pairs: Sequence[tuple[str, str]], scores: Sequence[float],
                  pooling: str = "mean", normalize: bool = False, batch_size: int = 128) -> float:
    """Spearman correlation between the cosine similarity of the two sentences' embeddings and gold scores."""
    emb = embed(encoder, tokenizer, [s for pair in pairs for s in pair], (pooling,), batch_size)[pooling]
    emb = F.normalize(emb, dim=-1) if normalize else emb
    return spearman(_cosine(emb[0::2], emb[1::2]), torch.tensor(scores))


def inference_device(accelerator: str) -> str:
    """Where a command embeds its evaluation sentences: the GPU when the accelerator allows and one is there."""
    return "cuda" if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available() else "cpu"


Variants = Callable[[str, Tensor], dict[str, Tensor]]  # (pooling, embeddings) -> {variant name: embeddings}


def plain_and_l2(pooling: str, emb: Tensor) -> dict[str, Tensor]:
    return {"none": emb, "l2": F.normalize(emb, dim=-1)}


def sts_table(encoder: nn.Module, tokenizer: Any, dev: Sequence[tuple[str, str, Any]], variants: Variants = plain_and_l2,
              batch_size: int = 128, max_length: int = 128, num_pairs: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """The STS table: rows {pooling, variant, spearman, anisotropy} on scored pairs `dev` (STS-B dev), for
    every pooling and every variant of its embeddings (raw, L2, whitened, ...), from one encoder pass."""
    embs = embed(encoder, tokenizer, [s for a, b, _ in dev for s in (a, b)], POOLINGS, batch_size, max_length)
    gold = torch.tensor([float(y) for *_, y in dev], dtype=torch.float64)
    rows = []
    for how, emb in embs.items():
        for variant, e in variants(how, emb).items():
            generator = torch.Generator().manual_seed(seed)  # the same random pairs in every row
            rows.append({"pooling": how, "variant": variant, "spearman": spearman(_cosine(e[0::2], e[1::2]), gold),
                         "anisotropy": anisotropy(e, num_pairs, generator)})
            log.info("sts %s/%s: spearman %.4f anisotropy %.4f", how, variant, rows[-1]["spearman"],
                     rows[-1]["anisotropy"])
    return rows


def embedding_table(encoder: nn.Module, tokenizer: Any, glue_dir: str | Path, batch_size: int = 128,
                    num_pairs: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """The zero-shot table on STS-B dev for every pooling, raw and L2-normalised (`normalize`: variant l2)."""
    rows = sts_table(encoder, tokenizer, read_task("stsb", "dev", glue_dir), plain_and_l2, batch_size,
                     num_pairs=num_pairs, seed=seed)
    return [{**row, "normalize": row["variant"] == "l2"} for row in rows]


SUFFIXES = {"none": "", "l2": "_norm", "whiten": "_whiten"}  # variant -> summary key suffix


def table_summary(rows: Sequence[dict[str, Any]], when: str = "") -> dict[str, float]:
    """Summary keys sts/<pooling>[_norm|_whiten]/spearman[_<when>] and .../anisotropy[_<when>]."""
    out, tail = {}, f"_{when}" if when else ""
    for row in rows:
        key = f"sts/{row['pooling']}{SUFFIXES[row['variant']]}"
        out[f"{key}/spearman{tail}"], out[f"{key}/anisotropy{tail}"] = row["spearman"], row["anisotropy"]
    return out
