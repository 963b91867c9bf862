"""Pooling, anisotropy and the zero-shot STS table on a tiny random encoder and real STS-B text."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from lightning_bert.data.tokenizer import train_tokenizer
from lightning_bert.eval.embeddings import (POOLINGS, anisotropy, embed, embedding_table, pool, sts_zero_shot,
                                            table_summary)
from lightning_bert.eval.glue import read_task
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


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Explicit row-by-row cosine, in float64, with no library normalisation."""
    return np.array([float(x @ y) / (np.sqrt(x @ x) * np.sqrt(y @ y)) for x, y in zip(a, b)])


def test_sts_spearman_and_anisotropy_match_an_independent_computation(tiny: tuple) -> None:
    encoder, tokenizer = tiny
    dev = read_task("stsb", "dev", GLUE_DIR)[:300]
    pairs, gold = [(a, b) for a, b, _ in dev], [y for *_, y in dev]
    for how in POOLINGS:
        # the same batches as sts_zero_shot below: identical sentences then embed bit-identically (cosine ties)
        emb = embed(encoder, tokenizer, [s for pair in pairs for s in pair], (how,), 64)[how].double().numpy()
        cos = _cosines(emb[0::2], emb[1::2])
        expected = scipy.stats.spearmanr(cos, gold).statistic  # average ranks for ties, as Spearman defines
        for normalize in (False, True):  # cosine ignores length: normalising changes nothing
            rho = sts_zero_shot(encoder, tokenizer, pairs, gold, how, normalize, batch_size=64)
            assert rho == pytest.approx(expected, abs=1e-6), (how, normalize)

        # anisotropy: the same random pairs of distinct rows, recomputed by hand ...
        n, num_pairs = len(emb), 3000
        g = torch.Generator().manual_seed(5)
        i = torch.randint(n, (num_pairs,), generator=g)
        j = (i + torch.randint(1, n, (num_pairs,), generator=g)) % n
        by_hand = _cosines(emb[i.numpy()], emb[j.numpy()]).mean()
        estimate = anisotropy(torch.from_numpy(emb), num_pairs, torch.Generator().manual_seed(5))
        assert estimate == pytest.approx(by_hand, abs=1e-9)
        # ... and an unbiased estimate of the mean cosine over all pairs of distinct rows
        unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        all_pairs = unit @ unit.T
        off_diagonal = all_pairs[~np.eye(n, dtype=bool)]
        assert abs(estimate - off_diagonal.mean()) < 4 * off_diagonal.std() / np.sqrt(num_pairs)


def test_embedding_table_rows_are_the_per_pooling_scores(tiny: tuple) -> None:
    encoder, tokenizer = tiny
    rows = embedding_table(encoder, tokenizer, GLUE_DIR, num_pairs=500)
    assert [(r["pooling"], r["normalize"]) for r in rows] == [(p, n) for p in POOLINGS for n in (False, True)]
    dev = read_task("stsb", "dev", GLUE_DIR)
    texts, gold = [s for a, b, _ in dev for s in (a, b)], [y for *_, y in dev]
    embs = embed(encoder, tokenizer, texts)
    for row in rows:
        emb = embs[row["pooling"]].double().numpy()
        expected = scipy.stats.spearmanr(_cosines(emb[0::2], emb[1::2]), gold).statistic
        assert row["spearman"] == pytest.approx(expected, abs=1e-6)
        plain = next(r for r in rows if r["pooling"] == row["pooling"] and not r["normalize"])
        assert row["anisotropy"] == pytest.approx(plain["anisotropy"], abs=1e-9)  # same pairs, length-free cosine
    summary = table_summary(rows)
    assert summary == {f"sts/{r['pooling']}{'_norm' if r['normalize'] else ''}/{m}": r[m]
                       for r in rows for m in ("spearman", "anisotropy")}
