"""Training tokens/s of our ELECTRA (experiments/electra: sparse generator MLM, hashed inverse-CDF sampling, tied
embeddings) vs transformers' ElectraForMaskedLM + ElectraForPreTraining trained as ELECTRA trains them.

    pip install -e ".[bench]" && python benchmarks/rtd_throughput.py [--steps 5 --rounds 6 --threads 2]

Identical sizes: discriminator hidden 256, 4 layers, 4 heads, FFN 1024; generator at 1/4 width (hidden 64,
1 head, FFN 256), same depth; embeddings 256 shared by both (ELECTRA's tie); vocab 30522, sequence 128,
batch 32, 15% selected (85% [MASK]), loss = generator MLM + 50 x RTD, AdamW, the same batches. The
reference runs transformers' generator with its dense LM head over every position (its forward has no
sparse prediction), samples the masked positions from its softmax, detached, and judges every token.
Prints median tokens/s of each, the ratio, and peak memory of two steps in a fresh process.
"""
from __future__ import annotations

from typing import Callable

import torch

import harness  # benchmarks/harness.py: the shared side-by-side timing

SIZES = dict(hidden=256, layers=4, heads=4, ffn=1024, vocab=30522, seq=128, batch=32)
WEIGHT = 50.0
MODELS = ("ours", "transformers")


def make_ours(device: str) -> tuple[torch.nn.Module, Callable]:
    from lightning_bert.config import load
    from lightning_bert.model.encoder import BertEncoder
    from lightning_bert.objectives import build_objectives
    from lightning_bert.train.checkpoint import encoder_config

    cfg = load(["experiment=electra", "model.size=mini", f"model.hidden_size={SIZES['hidden']}",
                f"model.num_layers={SIZES['layers']}", f"model.num_heads={SIZES['heads']}",
                f"model.intermediate_size={SIZES['ffn']}", f"data.max_seq_length={SIZES['seq']}"])
    encoder = BertEncoder(encoder_config(cfg, SIZES["vocab"]))
    objectives = build_objectives(cfg, encoder)
    model = torch.nn.ModuleDict({"encoder": encoder, "objectives": objectives}).to(device)

    def loss(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        part = dict(batch)  # gen_mlm leaves the corrupted input in it for rtd
        return sum(o.weight * o(None, part).loss for o in objectives.values())

    return model, loss


def make_reference(device: str) -> tuple[torch.nn.Module, Callable]:
    import transformers

    def config(hidden: int, heads: int, ffn: int) -> transformers.ElectraConfig:
        return transformers.ElectraConfig(vocab_size=SIZES["vocab"], embedding_size=SIZES["hidden"], hidden_size=hidden,
                                          num_hidden_layers=SIZES["layers"], num_attention_heads=heads,
                                          intermediate_size=ffn, hidden_act="gelu")

    gen = transformers.ElectraForMaskedLM(config(SIZES["hidden"] // 4, SIZES["heads"] // 4, SIZES["ffn"] // 4))
    disc = transformers.ElectraForPreTraining(config(SIZES["hidden"], SIZES["heads"], SIZES["ffn"]))
    gen.electra.embeddings = disc.electra.embeddings  # ELECTRA's tied embeddings (word, position, type, norm)
    gen.generator_lm_head.weight = disc.electra.embeddings.word_embeddings.weight
    model = torch.nn.ModuleDict({"generator": gen, "discriminator": disc}).to(device)

    def loss(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        labels = batch["mlm_labels"]
        g = gen(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels)
        selected = labels != -100
        with torch.no_grad():
            logits = g.logits[selected].float()
            gumbel = -torch.log(-torch.log(torch.rand_like(logits).clamp(1e-9, 1 - 1e-9)))
            samples = (logits + gumbel).argmax(-1)
        original = torch.where(selected, labels, batch["input_ids"])
        corrupted = original.masked_scatter(selected, samples)
        d = disc(input_ids=corrupted, attention_mask=batch["attention_mask"],
                 labels=(corrupted != original).long())
        return g.loss + WEIGHT * d.loss

    return model, loss


def make(name: str, device: str) -> tuple[torch.nn.Module, Callable]:
    return make_reference(device) if name == "transformers" else make_ours(device)


def batches(n: int, device: str) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        ids = torch.randint(5, SIZES["vocab"], (SIZES["batch"], SIZES["seq"]), generator=g)
        ids[:, 0], ids[:, -1] = 2, 3  # [CLS] ... [SEP]
        chosen = (torch.rand(ids.shape, generator=g) < 0.15) & (ids > 4)
        masked = chosen & (torch.rand(ids.shape, generator=g) < 0.85)
        labels = torch.where(chosen, ids, torch.full_like(ids, -100))
        out.append({"input_ids": ids.masked_fill(masked, 4), "mlm_labels": labels,
                    "token_type_ids": torch.zeros_like(ids), "attention_mask": torch.ones_like(ids)})
    return [{k: v.to(device) for k, v in b.items()} for b in out]


def main() -> None:
    args = harness.arguments(__doc__).parse_args()
    median, memory = harness.side_by_side(args, make, batches, list(MODELS), SIZES)
    print(f"ratio ours/transformers: {median['ours'] / median['transformers']:.2f}x tokens/s, "
          f"{memory['ours'] / memory['transformers']:.2f}x memory")


if __name__ == "__main__":
    main()
