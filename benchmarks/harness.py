"""The shared side-by-side training-throughput harness of the benchmarks/*_throughput.py scripts.

Each script supplies `make(name, device) -> (model, loss_fn)` and `batches(n, device)`; the harness
measures peak memory of each model in a fresh process, then alternates the models round by round in one
process on the same batches (drift in the machine's speed hits all of them), and reports medians.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import time
from typing import Callable

import torch

Maker = Callable[[str, str], tuple[torch.nn.Module, Callable]]
Batches = Callable[[int, str], list[dict[str, torch.Tensor]]]


def arguments(doc: str, steps: int = 5, rounds: int = 6) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--steps", type=int, default=steps, help="training steps per round")
    parser.add_argument("--rounds", type=int, default=rounds, help="alternating rounds per model (first is warm-up)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser


def train_steps(loss_fn: Callable, optimizer: torch.optim.Optimizer, data: list[dict[str, torch.Tensor]],
                device: str) -> float:
    """Training tokens/s (batch x sequence slots) over these batches."""
    start = time.perf_counter()
    for batch in data:
        loss = loss_fn(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return sum(b["input_ids"].numel() for b in data) / (time.perf_counter() - start)


def _peak_memory(make: Maker, batches: Batches, name: str, device: str, threads: int) -> float:
    torch.set_num_threads(threads)
    model, loss_fn = make(name, device)
    train_steps(loss_fn, torch.optim.AdamW(model.parameters(), lr=1e-4), batches(2, device), device)
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory(make: Maker, batches: Batches, names: list[str], device: str, threads: int) -> dict[str, float]:
    """MiB at the peak of two training steps of each model, each in a fresh process so they don't mix.
    Run it first, while the parent is small: Linux keeps a parent's peak RSS across fork+exec."""
    with mp.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        return {name: pool.apply(_peak_memory, (make, batches, name, device, threads)) for name in names}


def alternate(make: Maker, data: list[dict[str, torch.Tensor]], names: list[str], rounds: int,
              device: str) -> dict[str, float]:
    """Median tokens/s of each model, alternating round by round on the same batches (round 0 warms up)."""
    torch.manual_seed(0)
    models = {name: make(name, device) for name in names}
    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=1e-4) for name, (model, _) in models.items()}
    speeds: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds):
        for name, (_, loss_fn) in models.items():
            tokens_per_sec = train_steps(loss_fn, optimizers[name], data, device)
            if round_ > 0 or rounds == 1:  # round 0 warms up, unless it is the only one
                speeds[name].append(tokens_per_sec)
    return {name: statistics.median(values) for name, values in speeds.items()}


def side_by_side(args: argparse.Namespace, make: Maker, batches: Batches, names: list[str],
                 sizes: dict) -> tuple[dict[str, float], dict[str, float]]:
    """Peak memory (fresh processes) then alternating rounds; prints one line per model and returns
    (median tokens/s, peak MiB) for the script's own ratio lines."""
    torch.set_num_threads(args.threads)
    memory = peak_memory(make, batches, names, args.device, args.threads)
    median = alternate(make, batches(args.steps, args.device), names, args.rounds, args.device)
    unit = "MiB allocated" if args.device == "cuda" else "MiB peak RSS"
    print(f"device={args.device} threads={args.threads} steps={args.steps} rounds={args.rounds} sizes={sizes}")
    for name in names:
        print(f"{name:<13} {median[name]:10.0f} tokens/s   {memory[name]:8.0f} {unit}")
    return median, memory
