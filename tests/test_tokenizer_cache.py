"""Tokenizers (trained, cached, loaded) and the memory-mapped token cache, on real Wikipedia text."""
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from lightning_bert.data.cache import corpus_key, tokenized_corpus
from lightning_bert.data.corpus import read_documents
from lightning_bert.data.datamodule import split_documents
from lightning_bert.data.tokenizer import SPECIAL_TOKENS, load_tokenizer, tokenizer_for
from lightning_bert.errors import UserError


@pytest.fixture(scope="module")
def documents(shared_data: Path) -> list[str]:
    return read_documents([str(shared_data / "wikipedia-en" / "valid.txt")])[:30]


@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "unigram"])
def test_each_kind_puts_special_tokens_first_and_is_cached(kind: str, documents: list[str], tmp_path: Path) -> None:
    key = corpus_key(documents)
    tok = tokenizer_for(documents, key, kind, 800, True, 2, tmp_path)
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert tok.get_vocab_size() <= 800
    cached = list(tmp_path.glob("tokenizer-*.json"))
    assert len(cached) == 1
    mtime = cached[0].stat().st_mtime_ns
    again = tokenizer_for(documents, key, kind, 800, True, 2, tmp_path)
    assert again.to_str() == tok.to_str() and cached[0].stat().st_mtime_ns == mtime  # reused, not retrained
    assert load_tokenizer(cached[0]).to_str() == tok.to_str()


def test_loading_a_foreign_or_broken_tokenizer_is_a_user_error(documents: list[str], tmp_path: Path) -> None:
    foreign = Tokenizer(models.WordPiece(unk_token="<unk>"))
    foreign.pre_tokenizer = pre_tokenizers.Whitespace()
    foreign.train_from_iterator(documents, trainers.WordPieceTrainer(vocab_size=500, special_tokens=["<unk>", "[MASK]"]))
    foreign.save(str(tmp_path / "foreign.json"))
    with pytest.raises(UserError, match="ids 0-4"):
        load_tokenizer(tmp_path / "foreign.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(UserError, match="broken.json"):
        load_tokenizer(tmp_path / "broken.json")


def test_token_cache_is_memory_mapped_and_consistent(documents: list[str], tmp_path: Path) -> None:
    key = corpus_key(documents)
    tok = tokenizer_for(documents, key, "wordpiece", 1000, True, 2, tmp_path)
    corpus = tokenized_corpus(documents, key, tok, tmp_path)
    again = tokenized_corpus(documents, key, tok, tmp_path)
    assert isinstance(again.tokens, np.memmap) and np.array_equal(again.tokens, corpus.tokens)
    assert corpus.num_documents == len(documents) and corpus.sentence_offsets[-1] == corpus.num_tokens
    # The first sentence's ids are exactly what the tokenizer gives for it.
    first = corpus.tokens[corpus.sentence_offsets[0]:corpus.sentence_offsets[1]]
    assert len(first) > 0 and (first >= 5).all()
    decoded = tok.decode(first.tolist())
    assert decoded and decoded.split()[0] in documents[0].lower()
    # Word starts: every token that does not begin with '##' starts a word (WordPiece).
    pieces = [tok.id_to_token(int(i)) for i in first]
    starts = corpus.word_starts[corpus.sentence_offsets[0]:corpus.sentence_offsets[1]]
    assert [not p.startswith("##") for p in pieces] == starts.tolist()


def test_validation_split_holds_out_whole_documents() -> None:
    train, valid = split_documents(100, 0.05)
    assert len(valid) == 5 and not set(train) & set(valid) and len(train) + len(valid) == 100
    assert np.array_equal(np.diff(valid), np.ones(4))  # one contiguous block
    assert np.array_equal(split_documents(100, 0.05)[1], valid)  # fixed, whatever the run seed
    with pytest.raises(UserError, match="document"):
        split_documents(2, 0.05)
