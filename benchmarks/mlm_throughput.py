"""Training tokens/s of this encoder + sparse MLM head vs `transformers` BertForPreTraining (eager).

    pip install -e ".[bench]" && python benchmarks/mlm_throughput.py [--steps 5 --rounds 6 --threads 2]

Identical sizes (hidden 256, 4 layers, 4 heads, FFN 1024, vocab 30522), sequence 128, batch 32,
AdamW, the same batches; the two models alternate round by round in one process, so drift in the
machine's speed hits both. Prints the median tokens/s of each, the ratio, and peak memory of one
training step in a fresh process (RSS on CPU, allocated bytes on CUDA). MFU beside tokens/s uses the
model FLOPs of lightning_bert.train.flops (sparse MLM head: the useful work, the same for both models) against
--peak-flops, else the GPU table, else (CPU) a measured fp32 matmul peak of this machine.
"""
from __future__ import annotations

import time

import torch

import harness  # benchmarks/harness.py: the shared side-by-side timing

SIZES = dict(hidden=256, layers=4, heads=4, ffn=1024, vocab=30522, seq=128, batch=32)


def make_ours(device: str) -> tuple[torch.nn.Module, callable]:
    from lightning_bert.config import load
    from lightning_bert.model.encoder import BertEncoder, EncoderConfig
    from lightning_bert.objectives import build_objectives

    cfg = load()
    encoder = BertEncoder(EncoderConfig(vocab_size=SIZES["vocab"], hidden_size=SIZES["hidden"],
                                        num_layers=SIZES["layers"], num_heads=SIZES["heads"],
                                        intermediate_size=SIZES["ffn"]))
    mlm = build_objectives(cfg, encoder)["mlm"]
    model = torch.nn.ModuleDict({"encoder": encoder, "mlm": mlm}).to(device)

    def loss(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = model["encoder"](batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
        return model["mlm"](hidden, batch).loss

    return model, loss


def make_reference(device: str) -> tuple[torch.nn.Module, callable]:
    from transformers import BertConfig, BertForPreTraining

    config = BertConfig(vocab_size=SIZES["vocab"], hidden_size=SIZES["hidden"], num_hidden_layers=SIZES["layers"],
                        num_attention_heads=SIZES["heads"], intermediate_size=SIZES["ffn"],
                        max_position_embeddings=512, attn_implementation="eager")
    model = BertForPreTraining(config).to(device)

    def loss(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                     attention_mask=batch["attention_mask"], labels=batch["mlm_labels"],
                     next_sentence_label=batch["nsp_labels"]).loss  # HF returns no loss without NSP labels

    return model, loss


def batches(n: int, device: str) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        ids = torch.randint(5, SIZES["vocab"], (SIZES["batch"], SIZES["seq"]), generator=g)
        chosen = torch.rand(ids.shape, generator=g) < 0.15
        labels = torch.where(chosen, ids, torch.full_like(ids, -100))
        out.append({"input_ids": ids.masked_fill(chosen, 4), "mlm_labels": labels,
                    "token_type_ids": torch.zeros_like(ids), "attention_mask": torch.ones_like(ids),
                    "nsp_labels": torch.zeros(SIZES["batch"], dtype=torch.long)})
    return [{k: v.to(device) for k, v in b.items()} for b in out]


def matmul_peak(device: str, size: int = 2048, repeats: int = 5) -> float:
    """Best FLOP/s of a square fp32 matmul: this machine's practical peak where no table entry exists."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def make(name: str, device: str) -> tuple[torch.nn.Module, callable]:
    return (make_ours if name == "ours" else make_reference)(device)


def main() -> None:
    parser = harness.arguments(__doc__)
    parser.add_argument("--peak-flops", type=float, default=None, help="peak FLOP/s for MFU (default: table/measured)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = ["ours", "transformers"]
    memory = harness.peak_memory(make, batches, names, args.device, args.threads)
    median = harness.alternate(make, batches(args.steps, args.device), names, args.rounds, args.device)
    ours, ref = median["ours"], median["transformers"]
    from lightning_bert.train.flops import count_flops, device_peak_flops

    per_token = count_flops(SIZES["hidden"], SIZES["layers"], SIZES["ffn"], SIZES["vocab"], SIZES["seq"]).training
    peak, source = args.peak_flops, "given"
    if not peak and args.device == "cuda":
        peak, source = device_peak_flops("32-true"), f"table ({torch.cuda.get_device_name()})"
    if not peak:
        peak, source = matmul_peak(args.device), "measured fp32 matmul"
    unit = "MiB allocated" if args.device == "cuda" else "MiB peak RSS"
    print(f"device={args.device} threads={args.threads} sizes={SIZES}")
    print(f"model FLOPs/token (train) {per_token / 1e6:.1f} M; peak {peak / 1e9:.1f} GFLOP/s ({source})")
    print(f"ours          {ours:10.0f} tokens/s  MFU {ours * per_token / peak:6.1%}   {memory['ours']:8.0f} {unit}")
    print(f"transformers  {ref:10.0f} tokens/s  MFU {ref * per_token / peak:6.1%}   {memory['transformers']:8.0f} {unit}")
    print(f"ratio ours/transformers: {ours / ref:.2f}x")


if __name__ == "__main__":
    main()
