"""FLOPs per token from the config: a hand count, and torch's FLOP counter on a real forward+backward."""
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from lightning_bert.config import load
from lightning_bert.errors import UserError  # noqa: F401 - config errors are UserErrors
from lightning_bert.train.checkpoint import encoder_config
from lightning_bert.train.flops import PEAK_FLOPS, count_flops, mfu, peak_flops, training_flops_per_token
from lightning_bert.model.encoder import BertEncoder, EncoderConfig
from lightning_bert.objectives import build_objectives


def test_hand_count_of_a_tiny_config() -> None:
    # hidden 64, 2 layers, FFN 128, vocab 1000, L = 32, 15% predicted, NSP head.
    c = count_flops(64, 2, 128, 1000, 32, mlm_rate=0.15, pair_head=True)
    assert c.attention_linear == 2 * 2 * (3 * 64 * 64 + 64 * 64)  # layers * 2 FLOPs * (QKV + out)
    assert c.attention_scores == 2 * 2 * (32 * 64 + 32 * 64)  # layers * 2 * (QK^T + AV) per query token
    assert c.ffn == 2 * 2 * (64 * 128 + 128 * 64)
    assert c.heads == pytest.approx(0.15 * 2 * (64 * 64 + 64 * 1000) + 2 * (64 * 64 + 64 * 2) / 32)
    assert c.embedding == 0
    assert c.training == 3 * c.forward == pytest.approx(3 * (65536 + 16384 + 65536 + c.heads))
    # ALBERT: a factorised E=16 embedding adds its projection and shrinks the decoder.
    albert = count_flops(64, 2, 128, 1000, 32, embedding=16, mlm_rate=0.15)
    assert albert.embedding == 2 * 16 * 64 and albert.heads == pytest.approx(0.15 * 2 * (64 * 16 + 16 * 1000))


@pytest.mark.parametrize("sentence, embedding", [("none", None), ("nsp", 32)])
def test_matches_torch_flop_counter_on_forward_and_backward(sentence: str, embedding) -> None:
    torch.manual_seed(0)
    overrides = ["model.hidden_size=64", "model.intermediate_size=192", "model.num_layers=3", "model.num_heads=4",
                 "model.dropout=0", "model.attention_dropout=0", f"objective.sentence={sentence}",
                 "data.max_seq_length=48"] + ([f"model.embedding_size={embedding}"] if embedding else [])
    cfg = load(overrides)
    vocab, batch, length = 700, 6, 48
    encoder = BertEncoder(EncoderConfig(vocab_size=vocab, hidden_size=64, num_layers=3, num_heads=4,
                                        intermediate_size=192, embedding_size=embedding, dropout=0.0,
                                        attention_dropout=0.0))
    heads = build_objectives(cfg, encoder)
    ids = torch.randint(5, vocab, (batch, length))
    chosen = torch.rand(ids.shape) < 0.15
    data = {"input_ids": ids, "token_type_ids": torch.zeros_like(ids), "attention_mask": torch.ones_like(ids),
            "mlm_labels": torch.where(chosen, ids, torch.full_like(ids, -100)),
            "sentence_label": torch.zeros(batch, dtype=torch.long)}
    # The math backend runs attention as matmuls the counter sees (CPU's fused kernel is not counted).
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        hidden = encoder(data["input_ids"], data["token_type_ids"], data["attention_mask"])
        sum(head(hidden, data).loss for head in heads.values()).backward()
    measured = counter.get_total_flops() / (batch * length)
    rate = chosen.float().mean().item()
    cfg.masking.rate = rate  # the share actually predicted in this batch
    assert training_flops_per_token(cfg, vocab) == pytest.approx(measured, rel=0.01)


def test_peak_table_and_mfu() -> None:
    assert peak_flops("NVIDIA H100 80GB HBM3", "bf16-mixed") == 989.4e12
    assert peak_flops("NVIDIA H100 PCIe", "bf16-mixed") == 756e12
    assert peak_flops("NVIDIA A100-SXM4-80GB", "bf16-mixed") == 312e12
    assert peak_flops("NVIDIA A10G", "bf16-mixed") == PEAK_FLOPS["a10g"]["bf16"]
    assert peak_flops("NVIDIA L40S", "bf16-mixed") == 362e12 and peak_flops("NVIDIA L4", "bf16-mixed") == 121e12
    assert peak_flops("NVIDIA H200", "32-true") in (66.9e12, 494.7e12)  # fp32, or tf32 when allowed
    assert peak_flops("Tesla V100-SXM2-16GB", "bf16-mixed") is None  # no bf16 tensor cores
    assert peak_flops("Some Future GPU", "bf16-mixed") is None
    assert mfu(10_000, 1e9, 1e14) == pytest.approx(0.1)


def test_peak_flops_config_key() -> None:
    assert load(["trainer.peak_flops=2.5e12"]).trainer.peak_flops == 2.5e12
    with pytest.raises(UserError, match="peak_flops"):
        load(["trainer.peak_flops=-1"])


def test_gated_ffn_and_local_window_match_torch_flop_counter() -> None:
    """SwiGLU (3 matrices at 2/3 width) and two windowed layers of three. SDPA's math path computes the
    full L x L scores and masks them; the count keeps the window's keys only, so the counter's figure
    minus the masked-out score work (read off the encoder's own masks) must equal it."""
    torch.manual_seed(0)
    length, vocab, batch, hidden = 48, 700, 6, 64
    cfg = load(["model.hidden_size=64", "model.intermediate_size=192", "model.num_layers=3", "model.num_heads=4",
                "model.dropout=0", "model.attention_dropout=0", "model.ffn=swiglu", "model.positions=rope",
                "model.norm_position=pre", "model.local_window=16", "model.global_every=3",
                f"data.max_seq_length={length}"])
    encoder = BertEncoder(encoder_config(cfg, vocab))
    assert encoder.layers[0].ffn.down.in_features == 128  # 2/3 of 192
    heads = build_objectives(cfg, encoder)
    ids = torch.randint(5, vocab, (batch, length))
    chosen = torch.rand(ids.shape) < 0.15
    data = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "mlm_labels": torch.where(chosen, ids, torch.full_like(ids, -100))}
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        hidden_states = encoder(ids)
        sum(head(hidden_states, data).loss for head in heads.values()).backward()
    masks = encoder.layer_masks(ids, None)
    assert masks[0] is None and masks[1] is masks[2]  # one mask for both local layers
    missing_keys = 2 * (length - masks[1].sum().item() / length)  # per query, over the two local layers
    discarded = 3 * 2.0 * 2 * missing_keys * hidden  # training (3x) x 2 FLOPs x (QK^T, AV) x hidden
    measured = counter.get_total_flops() / (batch * length)
    cfg.masking.rate = chosen.float().mean().item()
    assert training_flops_per_token(cfg, vocab) == pytest.approx(measured - discarded, rel=0.01)
    full = load(["model.hidden_size=64", "model.intermediate_size=192", "model.num_layers=3", "model.num_heads=4",
                 "model.ffn=swiglu", f"data.max_seq_length={length}"])
    full.masking.rate = cfg.masking.rate
    assert training_flops_per_token(full, vocab) == pytest.approx(measured, rel=0.01)  # no window: all of it
