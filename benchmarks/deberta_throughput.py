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

import argparse
import multiprocessing as mp
import resource
import statistics
import time
from typing import Callable

import torch

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

    from lightning_bert.hf.deberta import hf_config

    model = DebertaV2ForMaskedLM(hf_config(encoder_config())).to(device)

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


def train_steps(loss_fn: Callable, optimizer: torch.optim.Optimizer, data: list[dict[str, torch.Tensor]],
                device: str) -> float:
    start = time.perf_counter()
    for batch in data:
        loss = loss_fn(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return len(data) * SIZES["batch"] * SIZES["seq"] / (time.perf_counter() - start)


def peak_memory(name: str, device: str, threads: int) -> float:
    """MiB at the peak of two training steps, measured in a fresh process so the models don't mix."""
    torch.set_num_threads(threads)
    model, loss_fn = make(name, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    train_steps(loss_fn, optimizer, batches(2, device), device)
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="training steps per round")
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds per model (first is warm-up)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # Memory first, while this process is small: Linux keeps a parent's peak RSS across fork+exec.
    with mp.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        memory = {k: pool.apply(peak_memory, (k, args.device, args.threads)) for k in MODELS}
    torch.manual_seed(0)
    models = {k: make(k, args.device) for k in MODELS}
    optimizers = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, (m, _) in models.items()}
    data = batches(args.steps, args.device)
    speeds: dict[str, list[float]] = {k: [] for k in models}
    for round_ in range(args.rounds):
        for name, (_, loss_fn) in models.items():
            tps = train_steps(loss_fn, optimizers[name], data, args.device)
            if round_ > 0 or args.rounds == 1:  # round 0 warms up allocators and kernels
                speeds[name].append(tps)
    median = {k: statistics.median(v) for k, v in speeds.items()}
    unit = "MiB allocated" if args.device == "cuda" else "MiB peak RSS"
    print(f"device={args.device} threads={args.threads} sizes={SIZES}")
    for name in MODELS:
        print(f"{name:<13} {median[name]:10.0f} tokens/s   {memory[name]:8.0f} {unit}")
    print(f"ratio ours/transformers: {median['ours'] / median['transformers']:.2f}x   "
          f"ours+emd/transformers: {median['ours+emd'] / median['transformers']:.2f}x")


if __name__ == "__main__":
    main()
