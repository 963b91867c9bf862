"""Model FLOPs per token from the config, peak FLOP/s of known GPUs, and MFU.

Counting convention (PaLM appendix B, Megatron): matmul FLOPs only (2 per multiply-add); norms,
softmax, GELU and embedding lookups are left out. Training costs 3x the forward pass (backward = 2x),
i.e. 6 FLOPs per parameter met by a token plus the attention term 12 * layers * L * hidden. A gated
FFN (GeGLU, SwiGLU) has 3 matrices of hidden x width; a windowed layer scores each query against the
keys in its window only (the mean over the sequence, edges included), which is the useful work even
where a masked kernel computes and discards the rest.
MFU = achieved model FLOP/s / peak FLOP/s: recomputation, padding and idle time all lower it.

Imports torch only to read the current device's name; no model is built here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from lightning_bert.config import GATED_FFNS, POSITION_SCHEMES, ModelConfig

# Dense (no structured sparsity) peak FLOP/s per GPU from NVIDIA's datasheets: bf16/fp16 and tf32 on
# tensor cores, fp32 on CUDA cores. Keys are matched against torch.cuda.get_device_name() (lower case),
# first match wins, so the more specific names come first.
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "h200 nvl": {"bf16": 835e12, "fp16": 835e12, "tf32": 418e12, "fp32": 60e12},
    "h200": {"bf16": 989.4e12, "fp16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12},
    "h100 nvl": {"bf16": 835e12, "fp16": 835e12, "tf32": 418e12, "fp32": 60e12},
    "h100 pcie": {"bf16": 756e12, "fp16": 756e12, "tf32": 378e12, "fp32": 51.2e12},
    "h100": {"bf16": 989.4e12, "fp16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12},  # SXM (HBM3)
    "gh200": {"bf16": 989.4e12, "fp16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12},
    "a100": {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12},  # SXM and PCIe alike
    "a10g": {"bf16": 125e12, "fp16": 125e12, "tf32": 62.5e12, "fp32": 31.2e12},  # A10 datasheet figures
    "a10": {"bf16": 125e12, "fp16": 125e12, "tf32": 62.5e12, "fp32": 31.2e12},
    "l40s": {"bf16": 362e12, "fp16": 362e12, "tf32": 183e12, "fp32": 91.6e12},
    "l40": {"bf16": 181e12, "fp16": 181e12, "tf32": 90.5e12, "fp32": 90.5e12},
    "l4": {"bf16": 121e12, "fp16": 121e12, "tf32": 60e12, "fp32": 30.3e12},
    "v100": {"fp16": 125e12, "fp32": 15.7e12},  # SXM2; no bf16 tensor cores (bf16 runs emulated)
    "t4": {"fp16": 65e12, "fp32": 8.1e12},
}
PRECISION_DTYPE = {"bf16-mixed": "bf16", "bf16-true": "bf16", "16-mixed": "fp16", "16-true": "fp16",
                   "32-true": "fp32", "32": "fp32"}


@dataclass(frozen=True)
class FlopCount:
    """Model FLOPs per token of one forward pass, by part (training = 3x forward)."""

    embedding: float  # ALBERT's E -> H projection (0 when E = H)
    attention_linear: float  # Q, K, V and output projections, all layers
    attention_scores: float  # QK^T and attention x V: grows with the sequence length L (the window on local layers)
    ffn: float  # the FFN matmuls (2, or 3 for a gated kind), all layers
    heads: float  # sparse MLM head at the masked share, pair head per sequence

    @property
    def forward(self) -> float:
        return self.embedding + self.attention_linear + self.attention_scores + self.ffn + self.heads

    @property
    def training(self) -> float:
        return 3 * self.forward


def window_keys(seq_len: int, window: int) -> float:
    """Mean keys per query under |i - j| <= window // 2 over a sequence of seq_len (fewer at the edges)."""
    half = window // 2
    return sum(min(i + half, seq_len - 1) - max(i - half, 0) + 1 for i in range(seq_len)) / seq_len


def count_flops(hidden: int, layers: int, ffn: int, vocab: int, seq_len: int, embedding: Optional[int] = None,
                mlm_rate: float = 0.15, pair_head: bool = False, score_terms: int = 1, gated: bool = False,
                local_layers: int = 0, window: Optional[int] = None) -> FlopCount:
    """Per-token forward FLOPs of a BERT encoder with a sparse MLM head (vocab logits only for the
    `mlm_rate` share of tokens that are predicted) and optionally an NSP/SOP head (one per sequence).
    `score_terms`: score matmuls per layer (1 for BERT; DeBERTa adds c2p and p2c, XLNet a position term).
    `ffn`: the FFN's inner width; `gated`: a GLU's third matrix. `local_layers` of the `layers` attend
    within `window` (ModernBERT's local layers).
    ALBERT's sharing does not change FLOPs: a shared layer is still run `layers` times."""
    emb = embedding or hidden
    local_keys = window_keys(seq_len, window) if local_layers else 0.0
    keys = (layers - local_layers) * seq_len + local_layers * local_keys  # summed over layers, per query
    return FlopCount(
        embedding=2.0 * emb * hidden if emb != hidden else 0.0,
        attention_linear=layers * 2.0 * 4 * hidden * hidden,
        attention_scores=2.0 * keys * hidden * (1 + score_terms),  # scores (x terms) and x V
        ffn=layers * 2.0 * (3 if gated else 2) * hidden * ffn,
        heads=mlm_rate * 2.0 * (hidden * emb + emb * vocab) + (2.0 * (hidden * hidden + 2 * hidden) / seq_len
                                                              if pair_head else 0.0),
    )


def config_flops(cfg: Any, vocab_size: int, seq_len: Optional[int] = None) -> FlopCount:
    """FlopCount of a run config (the top-level DictConfig): model dims, masking rate, sentence head.
    `seq_len` defaults to data.max_seq_length (packed batches; pass the mean padded length otherwise)."""
    model = cfg.model
    layers, hidden, _, _ = ModelConfig.dims(model)  # works on a DictConfig and on the dataclass
    terms = POSITION_SCHEMES[ModelConfig.position_scheme(model)].score_terms
    local = sum(ModelConfig.is_local(model, i) for i in range(layers))
    return count_flops(hidden, layers, ModelConfig.ffn_width(model), vocab_size, seq_len or cfg.data.max_seq_length,
                       model.embedding_size, cfg.masking.rate, cfg.objective.sentence != "none", terms,
                       gated=model.ffn in GATED_FFNS, local_layers=local, window=model.local_window)


def training_flops_per_token(cfg: Any, vocab_size: int, seq_len: Optional[int] = None) -> float:
    """Model FLOPs of one training token (forward + backward) for a run config: what MFU divides by."""
    return config_flops(cfg, vocab_size, seq_len).training


def peak_flops(device_name: str, precision: str) -> Optional[float]:
    """Peak dense FLOP/s of a GPU (by its torch name) at a Lightning precision; None when unknown.
    32-true counts as tf32 when PyTorch lets float32 matmuls use tensor cores."""
    dtype = PRECISION_DTYPE.get(str(precision), "fp32")
    if dtype == "fp32":
        import torch

        if torch.get_float32_matmul_precision() != "highest":
            dtype = "tf32"
    name = device_name.lower()
    for key, peaks in PEAK_FLOPS.items():
        if key in name:
            return peaks.get(dtype)
    return None


def device_peak_flops(precision: str, given: Optional[float] = None) -> Optional[float]:
    """`given` (trainer.peak_flops) if set, else the current CUDA device's table entry, else None (CPU)."""
    if given:
        return float(given)
    import torch

    if not torch.cuda.is_available():
        return None
    return peak_flops(torch.cuda.get_device_name(), precision)


def mfu(tokens_per_sec: float, flops_per_token: float, peak: float) -> float:
    """Model FLOPs utilisation: tokens_per_sec * flops_per_token / peak. Give tokens/s and peak for the
    same devices: per device, or summed over all of them (peak x world size)."""
    return tokens_per_sec * flops_per_token / peak
