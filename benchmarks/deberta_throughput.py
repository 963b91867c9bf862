"""Training tokens/s of our DeBERTa (disentangled attention + sparse MLM head) vs transformers' DebertaV2ForMaskedLM.

    pip install -e ".[bench]" && python benchmarks/deberta_throughput.py [--steps 5 --rounds 6 --threads 2]

Identical sizes (hidden 256, 4 layers, 4 heads, FFN 1024, vocab 30522), sequence 128, batch 32, v3-style
attention on both sides (c2p + p2c, 256 log buckets, shared Q/K projections, relative table LayerNorm, no
absolute positions at the input), AdamW, the same batches; the models alternate round by round in one
process, so drift in the machine's speed hits all of them. `ours+emd` adds the enhanced mask decoder,
which transformers does not have (it reruns the last layer twice, at the masked rows only). Prints the
median tokens/s of each, the ratios, and peak memory of two training steps in a fresh process (RSS on
CPU, allocated bytes on CUDA).
"""
from __future__ import annotations

from typing import Callable

import torch

import harness  # benchmarks/harness.py: the shared side-by-side timing

SIZES = dict(hidden=256, layers=4, heads=4, ffn=1024, vocab=30522, seq=128, batch=32, buckets=256)
MODELS = ("ours", "ours+emd", "transformers")


def encoder_config():
    from lightning_bert.model.config import EncoderConfig

    return EncoderConfig(vocab_size=SIZES["vocab"], hidden_size=SIZES["hidden"], num_layers=SIZES["layers"],
                         num_heads=SIZES["heads"], intermediate_size=SIZES["ffn"], attention="disentangled",
                         position_biased_input=False, position_buckets=SIZES["buckets"], share_att_key=True,
                         pos_att_type=("c2p", "p2c"), layer_norm_eps=1e-7)


def make_ours(device: str, emd: bool) -> tuple[torch.nn.Module, Callable]:
    from lightning_bert.config import load
    from lightning_bert.model.encoder import BertEncoder
    from lightning_bert.objectives import build_objectives

    cfg = load(["model.attention=disentangled", f"objective.emd={str(emd).lower()}"])
    encoder = BertEncoder(encoder_config())
    mlm = build_objectives(cfg, encoder)["mlm"]
    model = torch.nn.ModuleDict({"encoder": encoder, "mlm": mlm}).to(device)

    def loss(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = model["encoder"](batch["input_ids"], batch["token_type_ids"], batch["attention_mask"],
                               output_layers=emd)
        return model["mlm"](out[-1] if emd else out, batch, out if emd else None).loss

    return model, loss


def make_reference(device: str) -> tuple[torch.nn.Module, Callable]:
    from transformers import DebertaV2ForMaskedLM

    from lightning_bert.hf.deberta import DebertaV2Adapter

    model = DebertaV2ForMaskedLM(DebertaV2Adapter().hf_config(encoder_config())).to(device)

    def loss(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                     attention_mask=batch["attention_mask"], labels=batch["mlm_labels"]).loss

    return model, loss


def make(name: str, device: str) -> tuple[torch.nn.Module, Callable]:
    return make_reference(device) if name == "transformers" else make_ours(device, emd=name == "ours+emd")


def batches(n: int, device: str) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        ids = torch.randint(5, SIZES["vocab"], (SIZES["batch"], SIZES["seq"]), generator=g)
        chosen = torch.rand(ids.shape, generator=g) < 0.15
        labels = torch.where(chosen, ids, torch.full_like(ids, -100))
        out.append({"input_ids": ids.masked_fill(chosen, 4), "mlm_labels": labels,
                    "token_type_ids": torch.zeros_like(ids), "attention_mask": torch.ones_like(ids)})
    return [{k: v.to(device) for k, v in b.items()} for b in out]


def main() -> None:
    args = harness.arguments(__doc__).parse_args()
    median, _ = harness.side_by_side(args, make, batches, list(MODELS), SIZES)
    print(f"ratio ours/transformers: {median['ours'] / median['transformers']:.2f}x   "
          f"ours+emd/transformers: {median['ours+emd'] / median['transformers']:.2f}x")


if __name__ == "__main__":
    main()
