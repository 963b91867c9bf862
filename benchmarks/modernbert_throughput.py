"""Training tokens/s of our encoder in ModernBERT's layout vs `transformers` ModernBertForMaskedLM (sdpa).

    python benchmarks/modernbert_throughput.py [--steps 5 --rounds 6 --threads 2]

ModernBERT's layout (RoPE 160k global / 10k local, GeGLU, no biases, pre-norm without layer 0's attention norm,
no segment embeddings, a 128-token window on all layers but every third) at hidden 256, 4 layers, 4 heads,
intermediate 384 (ModernBERT's 1.5 x hidden), vocabulary 50368, sequence 128, batch 32, 30% masking; the
reference's ModernBertConfig is our export's (hf/modernbert.py), so the two compute the same function, with
its sparse prediction on (logits at masked tokens only, as ours). AdamW, the same batches, alternating round
by round in one process (benchmarks/harness.py); peak memory of two training steps, each model in a fresh
process (RSS on CPU, allocated bytes on CUDA).
"""
from __future__ import annotations

import torch

import harness  # benchmarks/harness.py: the shared side-by-side timing

SIZES = dict(hidden=256, layers=4, heads=4, ffn=384, vocab=50368, seq=128, batch=32, window=128, rate=0.3)
MODERNBERT = [  # the layout, as in experiments/modernbert.yaml (model section)
    "model.positions=rope", "model.rope_theta=160000", "model.local_rope_theta=10000", "model.ffn=geglu",
    "model.norm_position=pre", "model.first_attention_norm=false", "model.segment_embeddings=false",
    "model.attention_bias=false", "model.mlp_bias=false", "model.norm_bias=false", "model.head_bias=false",
    f"model.local_window={SIZES['window']}", "model.global_every=3", "model.dropout=0", "model.attention_dropout=0",
    f"model.hidden_size={SIZES['hidden']}", f"model.num_layers={SIZES['layers']}", f"model.num_heads={SIZES['heads']}",
    f"model.intermediate_size={SIZES['ffn']}", f"data.max_seq_length={SIZES['seq']}", f"masking.rate={SIZES['rate']}",
    "objective.sentence=none"]


def run_config():
    from lightning_bert.config import load

    return load(MODERNBERT)


def make_ours(device: str) -> tuple[torch.nn.Module, callable]:
    from lightning_bert.model.encoder import BertEncoder
    from lightning_bert.objectives import build_objectives
    from lightning_bert.train.checkpoint import encoder_config

    cfg = run_config()
    encoder = BertEncoder(encoder_config(cfg, SIZES["vocab"]))
    mlm = build_objectives(cfg, encoder)["mlm"]
    model = torch.nn.ModuleDict({"encoder": encoder, "mlm": mlm}).to(device)

    def loss(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model["mlm"](model["encoder"](batch["input_ids"], None, batch["attention_mask"]), batch).loss

    return model, loss


def make_reference(device: str) -> tuple[torch.nn.Module, callable]:
    from transformers import ModernBertForMaskedLM

    from lightning_bert.hf.modernbert import ModernBertAdapter
    from lightning_bert.train.checkpoint import encoder_config

    config = ModernBertAdapter().hf_config(encoder_config(run_config(), SIZES["vocab"]), sparse_prediction=True)
    config._attn_implementation = "sdpa"
    model = ModernBertForMaskedLM(config).to(device)

    def loss(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     labels=batch["mlm_labels"]).loss

    return model, loss


def batches(n: int, device: str) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        ids = torch.randint(5, SIZES["vocab"], (SIZES["batch"], SIZES["seq"]), generator=g)
        chosen = torch.rand(ids.shape, generator=g) < SIZES["rate"]
        labels = torch.where(chosen, ids, torch.full_like(ids, -100))
        out.append({"input_ids": ids.masked_fill(chosen, 4), "mlm_labels": labels,
                    "attention_mask": torch.ones_like(ids)})
    return [{k: v.to(device) for k, v in b.items()} for b in out]


def make(name: str, device: str) -> tuple[torch.nn.Module, callable]:
    return (make_ours if name == "ours" else make_reference)(device)


def main() -> None:
    args = harness.arguments(__doc__).parse_args()
    median, memory = harness.side_by_side(args, make, batches, ["ours", "transformers"], SIZES)
    print(f"ratio ours/transformers: {median['ours'] / median['transformers']:.2f}x tokens/s, "
          f"{memory['ours'] / memory['transformers']:.2f}x memory")


if __name__ == "__main__":
    main()
