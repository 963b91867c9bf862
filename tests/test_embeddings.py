"""Pooling, anisotropy and the zero-shot STS table on a tiny random encoder and real STS-B text."""
from __future__ import annotations

import pytest
import torch

from lightning_bert.data.tokenizer import train_tokenizer
from lightning_bert.embeddings import (POOLINGS, anisotropy, embed, embedding_table, pool, sts_zero_shot,
                                       table_summary)
from lightning_bert.glue import read_task
from lightning_bert.model.encoder import BertEncoder, EncoderConfig
from conftest import GLUE_DIR


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    hidden = torch.randn(3, 6, 8, generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]])
    return hidden, mask


@pytest.mark.parametrize("how", POOLINGS)
@pytest.mark.parametrize("normalize", [False, True])
def test_pool_shapes_and_norms(how: str, normalize: bool) -> None:
    hidden, mask = _batch()
    out = pool(hidden, mask, how, normalize)
    assert out.shape == (3, 8)
    norms = out.norm(dim=-1)
    if normalize:
        assert torch.allclose(norms, torch.ones(3), atol=1e-6)
    else:
        assert not torch.allclose(norms, torch.ones(3), atol=1e-2)
    padded = hidden.clone()
    padded[mask == 0] = 1e4  # padding must never leak into an embedding
    assert torch.allclose(pool(padded, mask, how, normalize), out)


def test_pool_values() -> None:
    hidden, mask = _batch()
    assert torch.equal(pool(hidden, mask, "cls"), hidden[:, 0])
    assert torch.allclose(pool(hidden, mask, "mean")[1], hidden[1, :3].mean(0))
    assert torch.equal(pool(hidden, mask, "eos"), torch.stack([hidden[0, 5], hidden[1, 2], hidden[2, 1]]))
    with pytest.raises(ValueError, match="unknown pooling"):
        pool(hidden, mask, "max")


def test_anisotropy_random_near_zero_identical_exactly_one() -> None:
    g = torch.Generator().manual_seed(0)
    assert abs(anisotropy(torch.randn(1000, 64, generator=g), 4000, g)) < 0.02
    same = torch.randn(1, 64, generator=g).expand(50, 64)
    assert anisotropy(same, 500, g) == 1.0
    assert anisotropy(torch.full((10, 16), 3.0), 100, g) == 1.0


@pytest.fixture(scope="module")
def tiny() -> tuple[BertEncoder, object]:
    texts = [s for a, b, _ in read_task("stsb", "train", GLUE_DIR) for s in (a, b)]
    tokenizer = train_tokenizer("wordpiece", texts, 2000)
    torch.manual_seed(0)
    encoder = BertEncoder(EncoderConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=64, num_layers=2,
                                        num_heads=2, intermediate_size=128))
    return encoder, tokenizer


def test_embed_is_independent_of_batching(tiny: tuple) -> None:
    encoder, tokenizer = tiny
    texts = [a for a, _, _ in read_task("stsb", "dev", GLUE_DIR)[:40]]
    one = embed(encoder, tokenizer, texts, batch_size=1)
    many = embed(encoder, tokenizer, texts, batch_size=16)  # sorted, padded batches
    for how in POOLINGS:
        assert one[how].shape == (40, 64)
        assert torch.allclose(one[how], many[how], atol=1e-5)
    assert encoder.training  # mode restored


def test_sts_zero_shot_and_table(tiny: tuple) -> None:
    encoder, tokenizer = tiny
    dev = read_task("stsb", "dev", GLUE_DIR)[:200]
    pairs, scores = [(a, b) for a, b, _ in dev], [y for *_, y in dev]
    rho = sts_zero_shot(encoder, tokenizer, pairs, scores, "mean", False, batch_size=64)
    assert -1 <= rho <= 1
    # Cosine ignores vector length: L2 normalisation cannot change the score.
    assert sts_zero_shot(encoder, tokenizer, pairs, scores, "mean", True) == pytest.approx(rho, abs=1e-6)
    same = [(a, a) for a, _ in pairs[:10]]  # cosine exactly 1, above every distinct pair
    assert sts_zero_shot(encoder, tokenizer, same + pairs[10:20], [5.0] * 10 + [0.0] * 10) > 0.8
    rows = embedding_table(encoder, tokenizer, GLUE_DIR, num_pairs=500)
    assert [(r["pooling"], r["normalize"]) for r in rows] == [(p, n) for p in POOLINGS for n in (False, True)]
    summary = table_summary(rows)
    assert set(summary) == {f"sts/{p}{s}/{m}" for p in POOLINGS for s in ("", "_norm") for m in ("spearman", "anisotropy")}
    assert all(-1 <= v <= 1 for v in summary.values())
