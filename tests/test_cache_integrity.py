"""A damaged token cache is found when a run opens it (sizes always, digests once per run) and rebuilt with one
notice; a torn tokenizer JSON is a notice (cache) or one line (tokenizer.path), never a traceback."""
import logging
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from lightning_bert.data.cache import tokenized_corpus
from lightning_bert.data.corpus import file_source
from lightning_bert.data.tokenizer import load_tokenizer, tokenizer_for
from lightning_bert.errors import UserError


@pytest.fixture
def documents(shared_data: Path) -> list[str]:
    return list(file_source([str(shared_data / "wikipedia-en" / "valid.txt")], limit=12))


def build(documents: list[str], cache: Path):  # noqa: ANN201
    tok = tokenizer_for(documents, "k", "wordpiece", 500, True, 2, cache)
    return tok, tokenized_corpus(documents, "k", tok, cache)


def truncate(file: Path) -> None:
    with open(file, "r+b") as handle:
        handle.truncate(file.stat().st_size // 2)


def zero(file: Path) -> None:
    file.write_bytes(bytes(file.stat().st_size))


def other_valid_ids(file: Path) -> None:  # a permutation of the same ids: every value still in the vocabulary
    ids = np.fromfile(file, dtype=np.int32)
    ids[::-1].tofile(file)


@pytest.mark.parametrize("damage", [truncate, zero, other_valid_ids], ids=lambda f: f.__name__)
def test_damaged_token_array_is_rebuilt_with_one_notice(documents: list[str], tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture,
                                                        damage: Callable[[Path], None]) -> None:
    tok, corpus = build(documents, tmp_path)
    good = np.array(corpus.tokens)
    damage(corpus.path / "tokens.bin")
    with caplog.at_level(logging.WARNING, logger="lightning_bert"):
        again = tokenized_corpus(documents, "k", tok, tmp_path)
    notices = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(notices) == 1 and "tokens.bin" in notices[0] and "rebuilding" in notices[0]
    np.testing.assert_array_equal(np.array(again.tokens), good)


def test_unfinished_cache_without_manifest_is_rebuilt(documents: list[str], tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    tok, corpus = build(documents, tmp_path)
    (corpus.path / "manifest.json").unlink()
    with caplog.at_level(logging.WARNING, logger="lightning_bert"):
        again = tokenized_corpus(documents, "k", tok, tmp_path)
    assert "manifest.json is missing" in caplog.text and (again.path / "manifest.json").is_file()


def test_truncated_cached_tokenizer_is_trained_again_with_a_notice(documents: list[str], tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    tok, _ = build(documents, tmp_path)
    [cached] = tmp_path.glob("tokenizer-*.json")
    truncate(cached)
    with caplog.at_level(logging.WARNING, logger="lightning_bert"):
        again = tokenizer_for(documents, "k", "wordpiece", 500, True, 2, tmp_path)
    assert "is unreadable" in caplog.text and "training it again" in caplog.text
    assert again.get_vocab_size() == tok.get_vocab_size()
    load_tokenizer(cached)  # whole again


def test_truncated_tokenizer_path_is_one_line(documents: list[str], tmp_path: Path) -> None:
    build(documents, tmp_path)
    [cached] = tmp_path.glob("tokenizer-*.json")
    truncate(cached)
    with pytest.raises(UserError, match=r"^cannot load tokenizer.path=.*") as err:
        load_tokenizer(cached)
    assert "\n" not in str(err.value)
