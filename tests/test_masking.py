"""MLM masking (token, whole-word, span) on real Wikipedia text: rates, shapes, seeding."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lightning_bert.config import MaskingConfig
from lightning_bert.data.cache import TokenizedCorpus, corpus_key, tokenized_corpus
from lightning_bert.data.corpus import read_documents
from lightning_bert.data.examples import build_examples, encode_example
from lightning_bert.data.masking import IGNORE, dynamic_rng, mask_example, static_rng
from lightning_bert.data.tokenizer import MASK_ID, NUM_SPECIAL, PAD_ID, tokenizer_for

NUM_DOCS = 100  # same slice (and cache) as test_examples
VOCAB = 4000
REPO = Path(__file__).resolve().parents[1]


def wiki_docs(shared_data: Path, count: int) -> list[str]:
    return read_documents([str(shared_data / "wikipedia-en" / "train.txt")], "wikiextractor")[:count]


def encoded(corpus: TokenizedCorpus, task: str, max_len: int = 128, limit: int | None = None) -> list[dict]:
    ex = build_examples(corpus, task, max_len, np.random.default_rng(0))[:limit]
    return [encode_example(corpus, e, max_len) for e in ex]


@pytest.fixture(scope="module")
def corpus(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> TokenizedCorpus:
    docs = wiki_docs(shared_data, NUM_DOCS)
    cache = tmp_path_factory.getbasetemp() / "wiki-cache"  # shared with test_examples in one session
    key = corpus_key(docs)
    return tokenized_corpus(docs, key, tokenizer_for(docs, key, "wordpiece", VOCAB, True, 2, cache), cache)


@pytest.fixture(scope="module")
def pairs(corpus: TokenizedCorpus) -> list[dict]:
    return encoded(corpus, "nsp")  # ~5,800 examples, ~700k tokens


def run(items: list[dict], cfg: MaskingConfig, seed: int = 0) -> list[dict]:
    return [mask_example(e["input_ids"], e["special"], e["word_starts"], cfg, VOCAB, dynamic_rng(seed, 0, i))
            for i, e in enumerate(items)]


def runs_of(selected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) of each maximal run of selected positions."""
    edges = np.diff(np.concatenate([[0], selected.astype(np.int8), [0]]))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def test_token_masking_rates(pairs: list[dict]) -> None:
    cfg = MaskingConfig(unit="token")
    total = selected = masked = random = kept = 0
    for e, out in zip(pairs, run(pairs, cfg)):
        sel = out["mlm_labels"] != IGNORE
        new, old = out["input_ids"][sel], e["input_ids"][sel]
        assert (out["mlm_labels"][sel] == old).all() and (out["input_ids"][~sel] == e["input_ids"][~sel]).all()
        total += (~e["special"]).sum()
        selected += sel.sum()
        masked += (new == MASK_ID).sum()
        kept += (new == old).sum()
        swapped = (new != MASK_ID) & (new != old)
        random += swapped.sum()
        assert (new[swapped] >= NUM_SPECIAL).all() and (new[swapped] < VOCAB).all()
    assert total > 400_000  # enough for +-0.5 points on the 80/10/10 split (~60k selected)
    assert abs(selected / total - 0.15) < 0.005
    assert abs(masked / selected - 0.8) < 0.005
    assert abs(random / selected - 0.1) < 0.005
    assert abs(kept / selected - 0.1) < 0.005


@pytest.mark.parametrize("unit", ["token", "word", "span"])
def test_special_and_padding_never_selected(pairs: list[dict], unit: str) -> None:
    cfg = MaskingConfig(unit=unit, rate=0.5)  # a high rate presses against the boundaries
    for i, e in enumerate(pairs[:300]):
        pad = 7  # padded input: PAD positions are neither special nor maskable
        ids = np.concatenate([e["input_ids"], np.full(pad, PAD_ID)])
        special = np.concatenate([e["special"], np.zeros(pad, dtype=bool)])
        starts = np.concatenate([e["word_starts"], np.ones(pad, dtype=bool)])
        out = mask_example(ids, special, starts, cfg, VOCAB, static_rng(0, 0, i))
        sel = out["mlm_labels"] != IGNORE
        assert not (sel & (special | (ids == PAD_ID))).any()
        assert (out["input_ids"][special | (ids == PAD_ID)] == ids[special | (ids == PAD_ID)]).all()
        assert sel.any()


def test_sequences_without_maskable_tokens(pairs: list[dict]) -> None:
    ids, special = np.array([2, 3]), np.array([True, True])
    for unit in ("token", "word", "span"):
        for fixed in (False, True):
            out = mask_example(ids, special, special.copy(), MaskingConfig(unit=unit, fixed_count=fixed), VOCAB,
                               static_rng(0, 0, 0))
            assert (out["mlm_labels"] == IGNORE).all() and (out["input_ids"] == ids).all()


@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "unigram"])
def test_whole_word_masking_never_splits_a_word(shared_data: Path, tmp_path: Path, kind: str) -> None:
    docs = wiki_docs(shared_data, 4)  # unigram training is slow: a small real slice
    key = corpus_key(docs)
    tok = tokenizer_for(docs, key, kind, 1000, kind != "bpe", 2, tmp_path)
    corpus = tokenized_corpus(docs, key, tok, tmp_path)
    items = encoded(corpus, "sop", 64)
    assert (~np.asarray(corpus.word_starts)).mean() > 0.1  # plenty of multi-token words to split
    total = selected = 0
    for e, out in zip(items, run(items, MaskingConfig(unit="word"))):
        sel = out["mlm_labels"] != IGNORE
        word = np.cumsum(e["word_starts"])  # word index of each token; specials are words of their own
        for w in np.unique(word[sel]):
            assert sel[word == w].all(), f"{kind}: word {w} partly masked"
        total += (~e["special"]).sum()
        selected += sel.sum()
    assert abs(selected / total - 0.15) < 0.01


def test_span_masking(pairs: list[dict]) -> None:
    cfg = MaskingConfig(unit="span")
    lengths, total, selected = [], 0, 0
    for e, out in zip(pairs, run(pairs, cfg)):
        sel = out["mlm_labels"] != IGNORE
        starts, ends = runs_of(sel)  # spans never touch, so each run is one span
        for s, t in zip(starts, ends):
            assert not e["special"][s:t].any()
            assert (out["sbo_left"][s:t] == s - 1).all() and (out["sbo_right"][s:t] == t).all()
            assert e["word_starts"][s] and e["word_starts"][t]  # whole words
            lengths.append(int(e["word_starts"][s:t].sum()))
            masked = out["input_ids"][s:t] == MASK_ID
            assert masked.all() or not masked.any()  # 80/10/10 decided per span
        assert (out["sbo_left"][~sel] == -1).all() and (out["sbo_right"][~sel] == -1).all()
        total += (~e["special"]).sum()
        selected += sel.sum()
    assert abs(np.mean(lengths) - 3.8) < 0.2
    assert abs(selected / total - 0.15) < 0.01


@pytest.mark.parametrize("unit", ["token", "word", "span"])
def test_fixed_count(pairs: list[dict], unit: str) -> None:
    cfg = MaskingConfig(unit=unit, fixed_count=True)
    short = 0
    for e, out in zip(pairs[:1000], run(pairs[:1000], cfg)):
        budget = round(0.15 * (~e["special"]).sum())
        count = (out["mlm_labels"] != IGNORE).sum()
        assert count <= budget
        short += count < budget
    # token and span hit the budget exactly; whole words may leave a gap no word fits
    assert short == 0 if unit != "word" else short < 10


def test_static_masks_repeat_and_dynamic_masks_change(pairs: list[dict]) -> None:
    cfg = MaskingConfig(unit="span")
    e = pairs[11]

    def labels(rng: np.random.Generator) -> np.ndarray:
        return mask_example(e["input_ids"], e["special"], e["word_starts"], cfg, VOCAB, rng)["mlm_labels"]

    # static: a function of (seed, duplicate, example), whichever epoch or process asks
    assert (labels(static_rng(3, 1, 11)) == labels(static_rng(3, 1, 11))).all()
    assert not (labels(static_rng(3, 1, 11)) == labels(static_rng(3, 2, 11))).all()
    # dynamic: differs across epochs, repeats for the same (seed, epoch, example)
    assert not (labels(dynamic_rng(3, 0, 11)) == labels(dynamic_rng(3, 1, 11))).all()
    assert (labels(dynamic_rng(3, 1, 11)) == labels(dynamic_rng(3, 1, 11))).all()
    assert not (labels(dynamic_rng(3, 1, 11)) == labels(dynamic_rng(4, 1, 11))).all()
    # a separate process (a DataLoader worker, a restarted run) draws the same mask
    script = ("import json, sys, numpy as np; from lightning_bert.config import MaskingConfig; "
              "from lightning_bert.data.masking import mask_example, static_rng; e = json.loads(sys.argv[1]); "
              "out = mask_example(np.array(e['ids']), np.array(e['special']), np.array(e['starts']), "
              "MaskingConfig(unit='span'), 4000, static_rng(3, 1, 11)); print(json.dumps(out['mlm_labels'].tolist()))")
    arg = json.dumps({"ids": e["input_ids"].tolist(), "special": e["special"].tolist(),
                      "starts": e["word_starts"].tolist()})
    result = subprocess.run([sys.executable, "-c", script, arg], capture_output=True, text=True, cwd=REPO, check=True)
    assert json.loads(result.stdout) == labels(static_rng(3, 1, 11)).tolist()


def test_unknown_unit(pairs: list[dict]) -> None:
    cfg = MaskingConfig()
    cfg.unit = "sentence"  # bypasses the config check on purpose
    with pytest.raises(ValueError, match="token, word or span"):
        run(pairs[:1], cfg)
