"""Tokenizers (trained, cached, loaded) and the memory-mapped token cache, on real Wikipedia text."""
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from conftest import TINY

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


def _prepared(overrides: list[str]):
    from lightning_bert.config import load
    from lightning_bert.data.datamodule import PretrainDataModule

    data = PretrainDataModule(load(overrides))
    data.prepare()
    return data


def test_streamed_preparation_equals_the_list_path_and_a_hit_reads_no_text(
        tiny_overrides: list[str], shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lightning_bert.data.corpus as corpus_module

    docs = read_documents([str(shared_data / "wikipedia-en" / "valid.txt")])[:60]
    data = _prepared(tiny_overrides)
    # Same split as split_documents on the full list; same arrays as tokenizing that list.
    train, valid = split_documents(len(docs), 0.05)
    assert np.array_equal(data.train_ids, train) and np.array_equal(data.valid_ids, valid)
    reference = tokenized_corpus(docs, "reference", data.tokenizer, tmp_path / "ref")
    assert np.array_equal(data.corpus.tokens, reference.tokens)
    assert np.array_equal(data.corpus.sentence_offsets, reference.sentence_offsets)
    assert np.array_equal(data.corpus.document_offsets, reference.document_offsets)
    # The tokenizer saw the train documents only: a word of the held-out block alone is not in it.
    held_out_words = set(" ".join(docs[i] for i in valid).lower().split())
    train_words = set(" ".join(docs[i] for i in train).lower().split())
    only_held_out = [w for w in held_out_words - train_words if w.isalpha() and len(w) > 6]
    assert only_held_out and all(data.tokenizer.token_to_id(w) is None for w in only_held_out)

    def no_reading(path: str):
        raise AssertionError(f"a cache hit read {path}")

    monkeypatch.setattr(corpus_module, "read_lines", no_reading)
    again = _prepared(tiny_overrides)  # a restart: identified by file stats and samples, nothing re-read
    assert again.data_key == data.data_key and np.array_equal(again.corpus.tokens, data.corpus.tokens)
    assert np.array_equal(again.valid_ids, data.valid_ids)


def test_a_changed_file_is_a_new_corpus(tmp_path: Path, shared_data: Path) -> None:
    from lightning_bert.data.corpus import file_source

    path = tmp_path / "docs.txt"
    docs = read_documents([str(shared_data / "wikipedia-en" / "valid.txt")])[:5]
    path.write_text("\n\n".join(docs))
    first = file_source([str(path)])
    assert list(first) == docs and file_source([str(path)]).key == first.key
    assert file_source([str(path)], limit=3).key != first.key and len(list(file_source([str(path)], limit=3))) == 3
    path.write_text("\n\n".join(reversed(docs)))  # same size, new content
    assert file_source([str(path)]).key != first.key


def test_an_overlong_word_is_unk_and_never_trained_on(tmp_path: Path, shared_data: Path) -> None:
    # One unbroken 1 MB line, like a blob in web text: WordPiece training never finished on it.
    import random

    from lightning_bert.data.tokenizer import MAX_WORD_CHARS, UNK_ID

    docs = read_documents([str(shared_data / "wikipedia-en" / "valid.txt")])[:20]
    blob = random.Random(0).randbytes(500_000).hex()
    (tmp_path / "web.txt").write_text("\n\n".join(docs[:10] + [f"A blob follows {blob} and text goes on."] + docs[10:]))
    data = _prepared(TINY + [f"data.path={tmp_path / 'web.txt'}", f"data.cache_dir={tmp_path / 'cache'}",
                             "data.valid_fraction=0.1"])
    assert max(len(token) for token in data.tokenizer.get_vocab()) <= MAX_WORD_CHARS
    start, stop = data.corpus.doc_token_range(10)
    tokens = [data.tokenizer.id_to_token(int(i)) for i in data.corpus.tokens[start:stop]]
    assert tokens.count("[UNK]") == 1 and stop - start < 30  # the whole blob is one [UNK]
    assert data.tokenizer.token_to_id("[UNK]") == UNK_ID


# Not WordPiece: its trainer breaks ties between equal-count merges by the ids of "##" pieces, which it
# numbers in per-process hash order, so the vocabulary itself differs now and then (3 of 8 processes:
# 4 of 800 tokens on these 30 documents). Nodes agree because one process builds the cached tokenizer.
@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_training_twice_in_two_processes_gives_the_same_ids(kind: str, shared_data: Path, tmp_path: Path) -> None:
    """The WordPiece and Unigram trainers number equal-rank tokens in hash-map order, which differs
    per process: the same corpus must still give the same ids (a torchrun node rebuilding its cache,
    or a run reproduced from scratch, would otherwise train on other ids)."""
    import subprocess
    import sys

    script = ("import sys; from lightning_bert.data.corpus import read_documents; "
              "from lightning_bert.data.tokenizer import train_tokenizer; "
              f"docs = read_documents([{str(shared_data / 'wikipedia-en' / 'valid.txt')!r}])[:30]; "
              f"sys.stdout.write(train_tokenizer({kind!r}, docs, 800).to_str())")
    outputs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parents[1]).stdout for _ in range(2)]
    assert outputs[0] == outputs[1]
    tok = Tokenizer.from_str(outputs[0])
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
