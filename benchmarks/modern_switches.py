"""Training tokens/s of each issue-17 switch against plain BERT, side by side in one process.

    PYTHONPATH=. python benchmarks/modern_switches.py [--steps 2 --rounds 3 --threads 2] [--only rope local_global]

Plain BERT (post-norm LayerNorm, GELU FFN 1024, learned positions, segments, biases) at hidden 256, 4 layers,
4 heads, sequence 128, batch 32, vocab 8192 (the project's tokenizer default), sparse MLM head, AdamW; each
variant changes one thing. Parameters stay equal: the GLU kinds get the width of 2/3 x 1024 (3 matrices
instead of 2); RoPE and `no_segments` drop an input table (a lookup, not compute). `documents` feeds the
batch 4 packed documents per row (document_ids / position_ids: a block-diagonal mask). `modernbert` is all
of them together (ModernBERT's layout: local window 128 with a global layer every third, RoPE 160k/10k).
The models alternate round by round on the same batches (benchmarks/harness.py), so drift in the
machine's speed hits all of them; prints one line per switch: median tokens/s and its ratio to BERT.
"""
from __future__ import annotations

from typing import Callable

import torch

import harness  # benchmarks/harness.py: the shared side-by-side timing

SIZES = dict(hidden=256, layers=4, heads=4, ffn=1024, vocab=8192, seq=128, batch=32, documents=4)
GLU_FFN = ["model.intermediate_size=682"]  # 3 x 256 x 682 ~ 2 x 256 x 1024 weights
MODERN = ["model.positions=rope", "model.ffn=geglu", *GLU_FFN, "model.norm_position=pre",
          "model.first_attention_norm=false", "model.norm_bias=false", "model.attention_bias=false",
          "model.mlp_bias=false", "model.head_bias=false", "model.segment_embeddings=false", "model.local_window=128",
          "model.global_every=3", "model.rope_theta=160000", "model.local_rope_theta=10000"]
SWITCHES: dict[str, list[str]] = {
    "bert": [],
    "rmsnorm": ["model.norm=rmsnorm"],
    "pre_norm": ["model.norm_position=pre", "model.first_attention_norm=false"],
    "rope": ["model.positions=rope"],
    "geglu": ["model.ffn=geglu", *GLU_FFN],
    "swiglu": ["model.ffn=swiglu", "model.intermediate_size=1023"],  # 2/3 x 1023 = 682
    "bias_free": ["model.norm_bias=false", "model.attention_bias=false", "model.mlp_bias=false",
                  "model.head_bias=false"],
    "no_segments": ["model.segment_embeddings=false"],
    "local_global": ["model.local_window=128", "model.global_every=3"],
    "documents": [],  # the model is BERT's; the batch carries packed documents
    "modernbert": MODERN,
}
PACKED = ("documents", "modernbert")


def make(name: str, device: str) -> tuple[torch.nn.Module, Callable]:
    from lightning_bert.config import load
    from lightning_bert.model.encoder import BertEncoder
    from lightning_bert.objectives import build_objectives
    from lightning_bert.train.checkpoint import encoder_config

    cfg = load([f"model.hidden_size={SIZES['hidden']}", f"model.num_layers={SIZES['layers']}",
                f"model.num_heads={SIZES['heads']}", f"model.intermediate_size={SIZES['ffn']}",
                f"data.max_seq_length={SIZES['seq']}", *SWITCHES[name]])
    encoder = BertEncoder(encoder_config(cfg, SIZES["vocab"]))
    model = torch.nn.ModuleDict({"encoder": encoder, "mlm": build_objectives(cfg, encoder)["mlm"]}).to(device)
    packed = name in PACKED

    def loss(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        keys = {k: batch[k] for k in ("position_ids", "document_ids")} if packed else {}
        hidden = model["encoder"](batch["input_ids"], batch["token_type_ids"], None, **keys)
        return model["mlm"](hidden, batch).loss

    return model, loss


def batches(n: int, device: str) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    batch, seq, docs = SIZES["batch"], SIZES["seq"], SIZES["documents"]
    documents = torch.arange(seq) * docs // seq  # equal-length documents, no padding
    out = []
    for _ in range(n):
        ids = torch.randint(5, SIZES["vocab"], (batch, seq), generator=g)
        chosen = torch.rand(ids.shape, generator=g) < 0.15
        out.append({"input_ids": ids.masked_fill(chosen, 4), "token_type_ids": torch.zeros_like(ids),
                    "mlm_labels": torch.where(chosen, ids, torch.full_like(ids, -100)),
                    "document_ids": documents.expand(batch, seq),
                    "position_ids": (torch.arange(seq) % (seq // docs)).expand(batch, seq)})
    return [{k: v.to(device) for k, v in b.items()} for b in out]


def main() -> None:
    parser = harness.arguments(__doc__, steps=2, rounds=3)
    parser.add_argument("--only", nargs="+", choices=list(SWITCHES), help="these switches (bert is always run)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = ["bert", *[n for n in (args.only or SWITCHES) if n != "bert"]]
    median = harness.alternate(make, batches(args.steps, args.device), names, args.rounds, args.device)
    params = {name: sum(p.numel() for p in make(name, "cpu")[0].parameters()) for name in names}
    print(f"device={args.device} threads={args.threads} steps={args.steps} rounds={args.rounds} sizes={SIZES}")
    for name in names:
        print(f"{name:<13} {median[name]:9.0f} tokens/s   {median[name] / median['bert']:5.2f}x bert   "
              f"{params[name] / 1e6:6.2f}M params")


if __name__ == "__main__":
    main()
