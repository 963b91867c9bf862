"""GPU readiness, one section at a time (benchmarks/gpu_check.sh runs them all; see there).

    python benchmarks/gpu_check.py {env,sdpa,padding,sweep,train,overhead} [--cpu-dry-run] [--out DIR]

--cpu-dry-run: tiny sizes on the CPU, so every code path here can be checked without a GPU
(torch.compile then uses the "eager" backend: the wiring is exercised, not Inductor).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "wikipedia-en"
FULL = dict(size="base", seq=128, batch=64, steps=30, warmup=10, vocab=30522, docs=400)
DRY = dict(size="tiny", seq=32, batch=4, steps=3, warmup=1, vocab=1000, docs=40)


def sizes(args: argparse.Namespace) -> dict:
    return DRY if args.cpu_dry_run else FULL


def device(args: argparse.Namespace) -> str:
    if args.cpu_dry_run:
        return "cpu"
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --cpu-dry-run to check the script itself")
    return "cuda"


def section_env(args: argparse.Namespace) -> None:
    from lightning_bert.train.flops import device_peak_flops

    dev = device(args)
    name = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
    print(f"torch {torch.__version__}  cuda {torch.version.cuda}  device {name}")
    if dev == "cuda":
        print(f"bf16 supported: {torch.cuda.is_bf16_supported()}  capability {torch.cuda.get_device_capability()}")
        peak = device_peak_flops("bf16-mixed")
        print(f"peak bf16 (flops table): {peak / 1e12:.0f} TFLOP/s" if peak else "peak bf16: not in the flops table")


# ---- which SDPA kernel runs ------------------------------------------------------------------------

KERNELS = {  # ATen op (as the profiler names it) -> kernel family
    "aten::_scaled_dot_product_flash_attention": "flash",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "flash (cpu)",
    "aten::_scaled_dot_product_efficient_attention": "efficient",
    "aten::_scaled_dot_product_cudnn_attention": "cudnn",
    "aten::_scaled_dot_product_attention_math": "math",
    "aten::_scaled_dot_product_fused_attention_overrideable": "fused (other)",
}


def _attention_inputs(dev: str, s: dict, padded: bool) -> tuple:
    from lightning_bert.config import MODEL_SIZES
    from lightning_bert.model.attention import AbsoluteAttention, padding_mask
    from lightning_bert.model.config import EncoderConfig, LayerSpec

    layers, hidden, heads, ffn = MODEL_SIZES[s["size"]]
    attention = AbsoluteAttention(EncoderConfig(vocab_size=s["vocab"], hidden_size=hidden, num_heads=heads,
                                                attention_dropout=0.1), LayerSpec(index=0, attention="absolute")
                                  ).to(dev).train()
    x = torch.randn(s["batch"], s["seq"], hidden, device=dev, requires_grad=True)
    mask = torch.ones(s["batch"], s["seq"], dtype=torch.long, device=dev)
    if padded:  # pair batches: every row but the longest ends in padding
        lengths = torch.randint(s["seq"] // 2, s["seq"], (s["batch"],))
        lengths[0] = s["seq"]
        for row, n in enumerate(lengths.tolist()):
            mask[row, n:] = 0
    return attention, x, padding_mask(mask)  # exactly what the encoder hands its layers


def _kernels_used(attention, x, mask, dev: str) -> list[str]:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev == "cuda" else [])
    with warnings.catch_warnings(), torch.autocast(dev, dtype=torch.bfloat16), profile(activities=activities) as prof:
        warnings.simplefilter("ignore")  # the "kernel not used because" notes: the verdicts below give them
        attention(x, mask).float().sum().backward()
    return sorted({family for e in prof.events() for op, family in KERNELS.items() if e.name == op})


def section_sdpa(args: argparse.Namespace) -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    dev, s = device(args), sizes(args)
    for label, padded in (("packed (no padding mask)", False), ("padded pairs (bool mask)", True)):
        attention, x, mask = _attention_inputs(dev, s, padded)
        used = _kernels_used(attention, x, mask, dev)
        verdicts = []
        for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION,
                        SDPBackend.MATH):
            with warnings.catch_warnings(record=True) as why:  # PyTorch says why it refuses a kernel
                warnings.simplefilter("always")
                try:
                    with sdpa_kernel([backend]), torch.autocast(dev, dtype=torch.bfloat16):
                        attention(x, mask).float().sum().backward()
                    verdicts.append(f"{backend.name.lower()} yes")
                except RuntimeError:
                    reasons = [str(w.message).split(" (Triggered")[0] for w in why if "not used because" not in str(w.message)]
                    verdicts.append(f"{backend.name.lower()} no ({'; '.join(reasons[:1]) or 'unavailable'})")
        print(f"SDPA {label}: used {', '.join(used) or 'none found'}\n  can run: {'; '.join(verdicts)}")


# ---- padding share of pair batches ----------------------------------------------------------------

def section_padding(args: argparse.Namespace) -> None:
    from lightning_bert.config import load
    from lightning_bert.data.datamodule import PretrainDataModule

    s = sizes(args)
    shares = {}
    for sentence in ("nsp", "none"):
        cfg = load([f"data.path={DATA / 'valid.txt'}", f"data.max_documents={s['docs']}", "tokenizer.vocab_size=2000",
                    f"data.max_seq_length={s['seq']}", f"objective.sentence={sentence}", f"trainer.batch_size={s['batch']}",
                    f"data.cache_dir={args.out / 'cache'}", "logger.wandb.mode=disabled"])
        data = PretrainDataModule(cfg)
        data.setup("fit")
        real = total = 0
        for i, batch in enumerate(data.train_dataloader()):
            real += int(batch["attention_mask"].sum())
            total += batch["attention_mask"].numel()
            if i == 50:
                break
        shares[sentence] = 1 - real / total
    print(f"padding share: pair batches (nsp/sop) {shares['nsp']:.1%}, packed (sentence=none) {shares['none']:.1%}")
    if shares["nsp"] > 0.10:
        print("  > 10%: pair batches waste that share of compute; length bucketing (sort pairs into batches of "
              "similar length) or unpadded (varlen) attention would recover it. Packed batches do not pad.")


# ---- batch sweep: tokens/s, MFU and peak memory per batch shape, compile mode and AdamW kernel ----------

SWEEP = {"full": [(64, 128), (128, 128), (256, 128), (512, 128), (32, 512)], "dry": [(4, 32), (8, 32), (2, 64)]}
VARIANTS = [("eager", True), ("eager", False), ("layers", True), ("step", True)]  # (compile mode, fused AdamW)
SWEEP_BUDGET_S = {"full": 300, "dry": 900}  # the rest of a sweep is skipped past this: the script stays in 8 min


def _random_batches(s: dict, batch: int, seq: int, count: int, dev: str) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(count):
        ids = torch.randint(5, s["vocab"], (batch, seq), generator=g)
        chosen = torch.rand(ids.shape, generator=g) < 0.15
        batches.append({k: v.to(dev) for k, v in {
            "input_ids": ids.masked_fill(chosen, 4), "token_type_ids": torch.zeros_like(ids),
            "attention_mask": torch.ones_like(ids), "mlm_labels": torch.where(chosen, ids, -100)}.items()})
    return batches


def _raw_step_rate(s: dict, batches: list[dict], mode: str, fused: bool, dev: str, dry: bool) -> float:
    """The raw loop (no Lightning): bf16 autocast forward + MLM loss, backward, AdamW. mode: eager, layers
    (each block compiled) or step (the whole forward + loss compiled, as trainer.compile does)."""
    from lightning_bert.config import MODEL_SIZES, load
    from lightning_bert.model.encoder import BertEncoder, EncoderConfig
    from lightning_bert.objectives import build_objectives

    layers, hidden, heads, ffn = MODEL_SIZES[s["size"]]
    backend = "eager" if dry else "inductor"
    torch.manual_seed(0)
    encoder = BertEncoder(EncoderConfig(vocab_size=s["vocab"], hidden_size=hidden, num_layers=layers,
                                        num_heads=heads, intermediate_size=ffn)).to(dev)
    mlm = build_objectives(load(), encoder)["mlm"].to(dev)
    if mode == "layers":  # each block: the padding-mask check stays outside the graphs
        for block in {id(b): b for b in encoder.layers}.values():
            block.compile(backend=backend)
    params = torch.nn.ModuleList([encoder, mlm]).parameters()  # the tied decoder weight once
    optimizer = torch.optim.AdamW(params, lr=1e-4, **({"fused": True} if fused else {"foreach": True}))

    def loss_fn(batch: dict) -> torch.Tensor:
        with torch.autocast(dev, dtype=torch.bfloat16):
            hidden_states = encoder(batch["input_ids"], batch["token_type_ids"], None)  # no padding: no mask
            return mlm(hidden_states, batch).loss

    step = torch.compile(loss_fn, backend=backend) if mode == "step" else loss_fn
    warmup = s["warmup"]
    for i, batch in enumerate(batches):
        if i == warmup:
            if dev == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        step(batch).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if dev == "cuda":
        torch.cuda.synchronize()
    return sum(b["attention_mask"].numel() for b in batches[warmup:]) / (time.perf_counter() - start)


def section_sweep(args: argparse.Namespace) -> None:
    from lightning_bert.config import MODEL_SIZES
    from lightning_bert.train.flops import count_flops, device_peak_flops

    dev, s, kind = device(args), sizes(args), "dry" if args.cpu_dry_run else "full"
    layers, hidden, heads, ffn = MODEL_SIZES[s["size"]]
    peak = device_peak_flops("bf16-mixed") if dev == "cuda" else None
    began, best = time.perf_counter(), None
    print(f"BERT-{s['size']} bf16 autocast, raw loop, {s['steps']} timed steps after {s['warmup']}")
    print(f"{'batch':>5} {'seq':>4} {'compile':>7} {'AdamW':>7} {'tokens/s':>12} {'MFU':>6} {'peak mem':>9}")
    for batch, seq in SWEEP[kind]:
        per_token = count_flops(hidden, layers, ffn, s["vocab"], seq).training
        batches = _random_batches(s, batch, seq, s["warmup"] + s["steps"], dev)
        for mode, fused in VARIANTS:
            fused = fused and dev == "cuda"  # fused AdamW is the CUDA kernel; on the CPU both rows are foreach
            label = f"{batch:>5} {seq:>4} {mode:>7} {'fused' if fused else 'foreach':>7}"
            if time.perf_counter() - began > SWEEP_BUDGET_S[kind]:
                print(f"{label}  skipped (sweep time budget {SWEEP_BUDGET_S[kind]} s)")
                continue
            if dev == "cuda":
                torch.cuda.reset_peak_memory_stats()
            try:
                rate = _raw_step_rate(s, batches, mode, fused, dev, args.cpu_dry_run)
            except torch.OutOfMemoryError:
                print(f"{label}  out of memory")
                torch.cuda.empty_cache()
                continue
            mfu = rate * per_token / peak if peak else None
            memory = f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if dev == "cuda" else "n/a"
            print(f"{label} {rate:>12,.0f} {f'{mfu:.1%}' if mfu else 'n/a':>6} {memory:>9}", flush=True)
            if seq == s["seq"] and (best is None or rate > best["tokens_per_sec"]):
                best = {"batch": batch, "seq": seq, "compile": mode, "fused": fused, "tokens_per_sec": rate}
        del batches
    if best:
        (args.out / "best.json").write_text(json.dumps(best))
        print(f"best at seq {s['seq']}: batch {best['batch']}, compile {best['compile']}, "
              f"{'fused' if best['fused'] else 'foreach'} AdamW: {best['tokens_per_sec']:,.0f} tokens/s")


# ---- end to end: train.py with bf16-mixed ---------------------------------------------------------

def section_train(args: argparse.Namespace) -> None:
    s = sizes(args)
    data = DATA / ("valid.txt" if args.cpu_dry_run else "train.txt")
    for compiled in (False, True):
        if compiled and args.cpu_dry_run:
            print("train.py trainer.compile=true: skipped in the dry run (Inductor on CPU takes minutes)")
            continue
        name = f"gpu-check-{s['size']}-compile{int(compiled)}-{time.strftime('%H%M%S')}"
        overrides = [f"model.size={s['size']}", "trainer.precision=bf16-mixed", f"data.path={data}",
                     f"data.max_seq_length={s['seq']}", f"trainer.batch_size={s['batch']}",
                     f"trainer.max_steps={s['warmup'] + s['steps']}", f"trainer.log_every_n_steps={2 if args.cpu_dry_run else 5}",
                     f"trainer.val_check_interval={s['warmup'] + s['steps']}", "trainer.limit_val_batches=2",
                     f"trainer.compile={str(compiled).lower()}", f"run.output_dir={args.out / 'runs'}", f"run.name={name}",
                     f"data.cache_dir={args.out / 'cache'}", "logger.wandb.mode=disabled", "eval.probes=false"]
        if args.cpu_dry_run:
            overrides += ["trainer.accelerator=cpu", f"data.max_documents={s['docs']}", "tokenizer.vocab_size=1000"]
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "train.py", *overrides], cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - start
        run_dir = args.out / "runs" / name
        if proc.returncode or not (run_dir / "summary.json").is_file():
            print(f"train.py compile={compiled}: FAILED (exit {proc.returncode})\n{proc.stderr[-3000:]}")
            continue
        summary = json.loads((run_dir / "summary.json").read_text())
        rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
        losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
        last = {k: float(v) for r in rows for k, v in r.items() if v and k in ("train/tokens_per_sec", "train/mfu")}
        finite = all(math.isfinite(x) for x in losses)
        mfu = f"MFU {last['train/mfu']:.1%}" if "train/mfu" in last else "MFU not logged (no peak on CPU)"
        print(f"train.py bf16-mixed BERT-{s['size']} compile={compiled}: status {summary.get('status')}, "
              f"loss {losses[0]:.3f} -> {losses[-1]:.3f} ({'finite' if finite else 'NOT FINITE'}), "
              f"tokens/s {last.get('train/tokens_per_sec', float('nan')):,.0f}, {mfu} ({wall:.0f} s wall)")


def section_overhead(args: argparse.Namespace) -> None:
    """train.py itself at the sweep's best setting (batch, whole-step or no compile) against the raw loop's
    tokens/s there: the loop overhead on this device (train.py also loads real data; the raw loop does not)."""
    best_file = args.out / "best.json"
    if not best_file.is_file():
        print("no sweep result: run the sweep section first")
        return
    best, s = json.loads(best_file.read_text()), sizes(args)
    compiled = best["compile"] != "eager" and not args.cpu_dry_run  # dry run: Inductor on CPU takes minutes
    name = f"gpu-check-overhead-{time.strftime('%H%M%S')}"
    steps = s["warmup"] + s["steps"] + (0 if args.cpu_dry_run else 20)
    overrides = [f"model.size={s['size']}", "trainer.precision=bf16-mixed", f"data.path={DATA / 'valid.txt'}",
                 f"data.max_seq_length={best['seq']}", f"trainer.batch_size={best['batch']}",
                 f"trainer.max_steps={steps}", f"trainer.log_every_n_steps={s['steps']}", f"trainer.val_check_interval={steps}",
                 "trainer.limit_val_batches=1", f"trainer.compile={str(compiled).lower()}",
                 f"run.output_dir={args.out / 'runs'}", f"run.name={name}", f"data.cache_dir={args.out / 'cache'}",
                 "logger.wandb.mode=disabled", "eval.probes=false", "data.num_workers=2",
                 f"tokenizer.vocab_size={s['vocab'] if args.cpu_dry_run else 30522}"]
    if args.cpu_dry_run:
        overrides += ["trainer.accelerator=cpu", f"data.max_documents={s['docs']}"]
    proc = subprocess.run([sys.executable, "train.py", *overrides], cwd=REPO, capture_output=True, text=True)
    run_dir = args.out / "runs" / name
    if proc.returncode or not (run_dir / "metrics.csv").is_file():
        print(f"train.py at the best setting: FAILED (exit {proc.returncode})\n{proc.stderr[-3000:]}")
        return
    rates = [float(r["train/tokens_per_sec"]) for r in csv.DictReader((run_dir / "metrics.csv").open())
             if r.get("train/tokens_per_sec")]
    rate = rates[-1]  # the last window: past compilation and warm-up
    print(f"train.py batch {best['batch']} seq {best['seq']} compile={compiled}: {rate:,.0f} tokens/s against the raw "
          f"loop's {best['tokens_per_sec']:,.0f} ({best['compile']}): overhead {best['tokens_per_sec'] / rate - 1:+.1%}"
          + (" (dry run: CPU, tiny, uncompiled: measures nothing)" if args.cpu_dry_run else ""))


SECTIONS = {"env": section_env, "sdpa": section_sdpa, "padding": section_padding, "sweep": section_sweep,
            "train": section_train, "overhead": section_overhead}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("section", choices=SECTIONS)
    parser.add_argument("--cpu-dry-run", action="store_true", help="tiny sizes on the CPU: checks the script only")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/gpu_check")))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.cpu_dry_run:
        torch.set_num_threads(min(2, torch.get_num_threads()))
    SECTIONS[args.section](args)


if __name__ == "__main__":
    main()
