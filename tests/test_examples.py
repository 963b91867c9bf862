"""Examples as token ranges (pairs for NSP/SOP, packing for none) on real Wikipedia text."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lightning_bert.data.cache import TokenizedCorpus, corpus_key, tokenized_corpus
from lightning_bert.data.corpus import read_documents
from lightning_bert.data.examples import build_examples, encode_example
from lightning_bert.data.tokenizer import CLS_ID, SEP_ID, tokenizer_for
from lightning_bert.errors import UserError

NUM_DOCS = 100  # ~680k WordPiece tokens: thousands of pairs per seed


@pytest.fixture(scope="module")
def corpus(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> TokenizedCorpus:
    docs = read_documents([str(shared_data / "wikipedia-en" / "train.txt")], "wikiextractor")[:NUM_DOCS]
    cache = tmp_path_factory.getbasetemp() / "wiki-cache"  # shared with test_masking in one session
    key = corpus_key(docs)
    tok = tokenizer_for(docs, key, "wordpiece", 4000, True, 2, cache)
    return tokenized_corpus(docs, key, tok, cache)


def doc_of(corpus: TokenizedCorpus, token: np.ndarray) -> np.ndarray:
    """Document of each token offset (empty documents share an offset with the next: take that one)."""
    return np.searchsorted(corpus.document_token_offsets, token, side="right") - 1


def pairs(corpus: TokenizedCorpus, task: str, seeds=range(3), **kw) -> np.ndarray:
    return np.concatenate([build_examples(corpus, task, 128, np.random.default_rng(s), **kw) for s in seeds])


@pytest.mark.parametrize("task", ["nsp", "sop"])
def test_pair_labels_are_balanced(corpus: TokenizedCorpus, task: str) -> None:
    ex = pairs(corpus, task)
    assert len(ex) > 10_000
    assert abs((ex["label"] == 1).mean() - 0.5) <= 0.02
    assert set(np.unique(ex["label"])) == {0, 1}


def test_nsp_negatives_come_from_another_document_of_the_subset(corpus: TokenizedCorpus) -> None:
    subset = np.arange(0, NUM_DOCS, 2)
    ex = pairs(corpus, "nsp", doc_ids=subset)
    doc_a, doc_b = doc_of(corpus, ex["a_start"]), doc_of(corpus, ex["b_start"])
    assert (doc_of(corpus, ex["a_end"] - 1) == doc_a).all() and (doc_of(corpus, ex["b_end"] - 1) == doc_b).all()
    assert np.isin(doc_a, subset).all() and np.isin(doc_b, subset).all()
    negative = ex["label"] == 1
    assert (doc_a[negative] != doc_b[negative]).all()
    assert (doc_a[~negative] == doc_b[~negative]).all() and (ex["a_end"] <= ex["b_start"])[~negative].all()


def test_sop_pairs_are_consecutive_segments_of_one_document(corpus: TokenizedCorpus) -> None:
    ex = pairs(corpus, "sop")
    assert (doc_of(corpus, ex["a_start"]) == doc_of(corpus, ex["b_end"] - 1)).all()
    kept, swapped = ex[ex["label"] == 0], ex[ex["label"] == 1]
    assert (kept["a_end"] <= kept["b_start"]).all() and (swapped["b_end"] <= swapped["a_start"]).all()
    # untruncated pairs meet exactly; truncation only trims the ends, never reorders
    short = kept[(kept["a_end"] - kept["a_start"]) + (kept["b_end"] - kept["b_start"]) < 100]
    assert len(short) and (short["a_end"] == short["b_start"]).mean() > 0.5


def test_sop_order_is_not_marked_by_truncation(corpus: TokenizedCorpus) -> None:
    """Which segment starts or ends mid-sentence must not tell the order: the first segment begins a
    sentence as often when swapped as when kept (cutting only outer ends made this a 100% cue)."""
    starts = set(np.asarray(corpus.sentence_offsets).tolist())
    ex = pairs(corpus, "sop")
    first_begins_sentence = np.array([int(e["a_start"]) in starts for e in ex])
    kept, swapped = first_begins_sentence[ex["label"] == 0].mean(), first_begins_sentence[ex["label"] == 1].mean()
    assert abs(kept - swapped) < 0.05, (kept, swapped)


@pytest.mark.parametrize("task", ["none", "nsp", "sop"])
@pytest.mark.parametrize("max_len", [16, 128])
def test_examples_fit_and_encode(corpus: TokenizedCorpus, task: str, max_len: int) -> None:
    ex = build_examples(corpus, task, max_len, np.random.default_rng(0), doc_ids=np.arange(30))
    assert (ex["a_end"] > ex["a_start"]).all()
    if task != "none":
        assert (ex["b_end"] > ex["b_start"]).all()
    else:
        assert (ex["b_start"] == -1).all() and (ex["label"] == -1).all()
    for e in ex[::7]:
        enc = encode_example(corpus, e, max_len)
        ids, special = enc["input_ids"], enc["special"]
        assert len(ids) <= max_len and ids[0] == CLS_ID and ids[-1] == SEP_ID
        assert (special == ((ids == CLS_ID) | (ids == SEP_ID))).all()
        assert enc["word_starts"][special].all()
        if task == "none":
            assert (enc["token_type_ids"] == 0).all()
            assert (ids[~special] == corpus.tokens[e["a_start"]:e["a_end"]]).all()
        else:
            len_a = e["a_end"] - e["a_start"]
            assert special.sum() == 3 and ids[len_a + 1] == SEP_ID
            assert (ids[1:len_a + 1] == corpus.tokens[e["a_start"]:e["a_end"]]).all()
            assert (ids[len_a + 2:-1] == corpus.tokens[e["b_start"]:e["b_end"]]).all()
            assert (enc["token_type_ids"] == (np.arange(len(ids)) >= len_a + 2)).all()


def test_pairs_use_short_targets_sometimes(corpus: TokenizedCorpus) -> None:
    def mean_len(prob: float) -> float:
        ex = build_examples(corpus, "nsp", 128, np.random.default_rng(0), short_seq_prob=prob)
        return float(np.mean(ex["a_end"] - ex["a_start"] + ex["b_end"] - ex["b_start"]))
    assert mean_len(1.0) < 0.8 * mean_len(0.0)  # whole sentences overshoot short targets (as in BERT)


def test_none_packing_across_and_within_documents(corpus: TokenizedCorpus) -> None:
    starts = corpus.document_token_offsets
    for cross in (False, True):
        ex = build_examples(corpus, "none", 128, np.random.default_rng(0), cross_doc=cross)
        crossing = doc_of(corpus, ex["a_start"]) != doc_of(corpus, ex["a_end"] - 1)
        assert crossing.any() == cross
    for e in ex[crossing][:50]:
        enc = encode_example(corpus, e, 128)
        inside = np.unique(starts[(starts > e["a_start"]) & (starts < e["a_end"])])
        # every document boundary inside the range gets a [SEP] right before its first token
        positions = 1 + (inside - e["a_start"]) + np.arange(len(inside))
        assert (enc["input_ids"][positions] == SEP_ID).all()
        assert enc["special"].sum() == 2 + len(inside)
        assert (enc["input_ids"][~enc["special"]] == corpus.tokens[e["a_start"]:e["a_end"]]).all()


@pytest.mark.parametrize("max_len", [16, 128])
def test_none_packing_uses_every_token_of_the_subset_once(corpus: TokenizedCorpus, max_len: int) -> None:
    subset = np.sort(np.random.default_rng(1).choice(NUM_DOCS, 60, replace=False))
    ex = build_examples(corpus, "none", max_len, np.random.default_rng(0), doc_ids=subset)
    used = np.zeros(len(corpus.tokens), dtype=np.int64)
    for a, b in zip(ex["a_start"], ex["a_end"]):
        used[a:b] += 1
    expected = np.zeros_like(used)
    for d in subset:
        t0, t1 = corpus.doc_token_range(int(d))
        expected[t0:t1] = 1
    assert (used == expected).all()
    assert np.isin(doc_of(corpus, ex["a_start"]), subset).all()


def test_examples_are_a_function_of_the_seed(corpus: TokenizedCorpus) -> None:
    one = build_examples(corpus, "nsp", 64, np.random.default_rng(5), doc_ids=np.arange(20))
    two = build_examples(corpus, "nsp", 64, np.random.default_rng(5), doc_ids=np.arange(20))
    other = build_examples(corpus, "nsp", 64, np.random.default_rng(6), doc_ids=np.arange(20))
    assert (one == two).all() and not np.array_equal(one, other)


def test_user_errors(corpus: TokenizedCorpus) -> None:
    with pytest.raises(UserError, match="two non-empty documents"):
        build_examples(corpus, "nsp", 128, np.random.default_rng(0), doc_ids=np.array([3]))
    with pytest.raises(UserError, match="none, nsp, sop"):
        build_examples(corpus, "mlm", 128, np.random.default_rng(0))


@pytest.mark.parametrize("cross", [True, False])
def test_none_packing_fills_every_slot(corpus: TokenizedCorpus, cross: bool) -> None:
    """FULL-SENTENCES leaves no slot empty (the issue measured 13% empty before: a sentence that did
    not fit closed the example); DOC-SENTENCES only at the end of each document."""
    ex = build_examples(corpus, "none", 128, np.random.default_rng(0), cross_doc=cross)
    slots = np.array([len(encode_example(corpus, e, 128)["input_ids"]) for e in ex])
    full = slots == 128
    if cross:  # one contiguous run of documents: only the last example may be short
        assert full[:-1].all()
    else:  # a short example only where its document ends
        ends_doc = doc_of(corpus, ex["a_end"]) != doc_of(corpus, ex["a_end"] - 1)
        ends_doc |= ex["a_end"] == len(corpus.tokens)
        assert full[~ends_doc].all()


def test_shifted_packing_is_another_packing_of_the_same_tokens(corpus: TokenizedCorpus) -> None:
    plain = build_examples(corpus, "none", 64, np.random.default_rng(0))
    shifted = build_examples(corpus, "none", 64, np.random.default_rng(0), shift=True)
    assert plain["a_start"][0] == shifted["a_start"][0] and plain["a_end"][0] > shifted["a_end"][0]
    assert not np.isin(shifted["a_end"][:-1], plain["a_end"]).all()
    assert plain["a_end"][-1] == shifted["a_end"][-1]
