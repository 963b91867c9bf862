"""Training tokens/s of our XLNet (PLM objective, two streams, query rows only at the targets) vs
`transformers` XLNetLMHeadModel fed the way its DataCollatorForPermutationLanguageModeling feeds it.

    python benchmarks/xlnet_throughput.py [--steps 3 --rounds 4 --threads 2]

Identical sizes (hidden 256, 4 layers, 4 heads, FFN 1024, vocab 30522), sequence 128, batch 32, K=6,
AdamW, the same batches and the same targets: data/permutation.py draws each sequence's targets and
order once; ours gets plm_order, transformers gets the same perm_mask with the collator's layout
(target_mapping = eye(L), so its query stream and LM head run at all L positions, labels -100 elsewhere).
The models alternate round by round in one process, so drift in the machine's speed hits both. Prints
the median tokens/s of each, the ratio, and peak memory of one training step in a fresh process (RSS on
CPU, allocated bytes on CUDA).
"""
from __future__ import annotations

import numpy as np
import torch

import harness  # benchmarks/harness.py: the shared side-by-side timing

SIZES = dict(hidden=256, layers=4, heads=4, ffn=1024, vocab=30522, seq=128, batch=32, k=6)


def make_ours(device: str) -> tuple[torch.nn.Module, callable]:
    from lightning_bert.config import load
    from lightning_bert.model.encoder import BertEncoder, EncoderConfig
    from lightning_bert.objectives import build_objectives

    cfg = load(["experiment=xlnet", f"objective.plm_k={SIZES['k']}"])
    encoder = BertEncoder(EncoderConfig(vocab_size=SIZES["vocab"], hidden_size=SIZES["hidden"],
                                        num_layers=SIZES["layers"], num_heads=SIZES["heads"],
                                        intermediate_size=SIZES["ffn"], attention="relative",
                                        position_biased_input=False))
    plm = build_objectives(cfg, encoder)["plm"]
    model = torch.nn.ModuleDict({"encoder": encoder, "plm": plm}).to(device)

    def loss(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model["plm"](None, batch).loss

    return model, loss


def make_reference(device: str) -> tuple[torch.nn.Module, callable]:
    from transformers import XLNetConfig, XLNetLMHeadModel

    config = XLNetConfig(vocab_size=SIZES["vocab"], d_model=SIZES["hidden"], n_layer=SIZES["layers"],
                         n_head=SIZES["heads"], d_inner=SIZES["ffn"], ff_activation="gelu", mem_len=None,
                         use_mems_train=False, attn_type="bi", bi_data=False, clamp_len=-1)
    model = XLNetLMHeadModel(config).to(device)

    def loss(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                     attention_mask=batch["attention_mask"], perm_mask=batch["perm_mask"],
                     target_mapping=batch["target_mapping"], labels=batch["labels"]).loss

    return model, loss


def batches(n: int, device: str) -> list[dict[str, torch.Tensor]]:
    """[CLS] text [SEP], two segments; the targets and order of each sequence drawn once, in both formats."""
    from lightning_bert.data.permutation import permutation_example

    rng = np.random.default_rng(0)
    b, length = SIZES["batch"], SIZES["seq"]
    out = []
    for _ in range(n):
        ids = rng.integers(5, SIZES["vocab"], (b, length))
        ids[:, 0], ids[:, length // 2], ids[:, -1] = 2, 3, 3
        special = np.isin(ids, [2, 3])
        order = torch.from_numpy(np.stack([permutation_example(ids[i], special[i], SIZES["k"], 5, rng)["plm_order"]
                                           for i in range(b)]))
        ids = torch.from_numpy(ids)
        types = torch.zeros_like(ids)
        types[:, length // 2 + 1:] = 1
        out.append({
            "input_ids": ids, "token_type_ids": types, "attention_mask": torch.ones_like(ids), "plm_order": order,
            # transformers' collator layout: perm_mask [B, L, L] (1 = may not attend), eye(L) target mapping
            "perm_mask": (order[:, None, :] >= order.clamp(min=1)[:, :, None]).float(),
            "target_mapping": torch.eye(length).expand(b, length, length).contiguous(),
            "labels": torch.where(order > 0, ids, torch.full_like(ids, -100)),
        })
    return [{k: v.to(device) for k, v in batch.items()} for batch in out]


def make(name: str, device: str) -> tuple[torch.nn.Module, callable]:
    return (make_ours if name == "ours" else make_reference)(device)


def main() -> None:
    args = harness.arguments(__doc__, steps=3, rounds=4).parse_args()
    torch.set_num_threads(args.threads)
    names = ["ours", "transformers"]
    memory = harness.peak_memory(make, batches, names, args.device, args.threads)
    data = batches(args.steps, args.device)
    targets = sum(int((b["plm_order"] > 0).sum()) for b in data) / sum(b["input_ids"].numel() for b in data)
    median = harness.alternate(make, data, names, args.rounds, args.device)
    ours, ref = median["ours"], median["transformers"]
    unit = "MiB allocated" if args.device == "cuda" else "MiB peak RSS"
    print(f"device={args.device} threads={args.threads} sizes={SIZES} targets={targets:.1%} of tokens")
    print(f"ours          {ours:10.0f} tokens/s   {memory['ours']:8.0f} {unit}")
    print(f"transformers  {ref:10.0f} tokens/s   {memory['transformers']:8.0f} {unit}")
    print(f"ratio ours/transformers: {ours / ref:.2f}x")


if __name__ == "__main__":
    main()
