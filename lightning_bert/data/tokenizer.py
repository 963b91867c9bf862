"""Train (WordPiece / byte-level BPE / Unigram) or load a `tokenizers` tokenizer, cached on disk.

The special tokens are the one source of truth for their ids: every tokenizer here puts them first.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Iterable, Iterator, Optional

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from lightning_bert.train.durable import atomic_write_text
from lightning_bert.errors import UserError

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(len(SPECIAL_TOKENS))
NUM_SPECIAL = len(SPECIAL_TOKENS)


def _wordpiece(vocab_size: int, lowercase: bool, min_frequency: int) -> tuple[Tokenizer, trainers.Trainer]:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    return tok, trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                          special_tokens=list(SPECIAL_TOKENS), show_progress=False)


def _bpe(vocab_size: int, lowercase: bool, min_frequency: int) -> tuple[Tokenizer, trainers.Trainer]:
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))  # byte-level: [UNK] never occurs, kept for a uniform id map
    tok.normalizer = normalizers.NFC()  # RoBERTa keeps case
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    return tok, trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                    special_tokens=list(SPECIAL_TOKENS),
                                    initial_alphabet=pre_tokenizers.ByteLevel.alphabet())


def _unigram(vocab_size: int, lowercase: bool, min_frequency: int) -> tuple[Tokenizer, trainers.Trainer]:
    tok = Tokenizer(models.Unigram())
    steps = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
    tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    return tok, trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                        unk_token="[UNK]", show_progress=False)


BUILDERS = {"wordpiece": _wordpiece, "bpe": _bpe, "unigram": _unigram}

# BERT's max_input_chars_per_word: a longer word (a base64 blob, a run of symbols) encodes as [UNK].
# Trainers are super-linear in word length (a 1 MB word never finishes), so such words are left out
# of training: they cannot enter the vocabulary, and training time stays linear in corpus size.
MAX_WORD_CHARS = 100
_OVERLONG = re.compile(r"\S{%d,}" % (MAX_WORD_CHARS + 1))


def drop_overlong_words(text: str) -> str:
    """`text` without its whitespace-separated words of more than MAX_WORD_CHARS characters."""
    return _OVERLONG.sub(" ", text) if len(text) > MAX_WORD_CHARS else text


def _training_text(documents: Iterable[str]) -> Iterator[str]:
    for doc in documents:
        yield drop_overlong_words(doc)


def train_tokenizer(kind: str, documents: Iterable[str], vocab_size: int, lowercase: bool = True,
                    min_frequency: int = 2, length: Optional[int] = None) -> Tokenizer:
    """Train on documents streamed from any iterable (never held as a list); `length` is only for progress."""
    tok, trainer = BUILDERS[kind](vocab_size, lowercase, min_frequency)
    if length is None and hasattr(documents, "__len__"):
        length = len(documents)  # type: ignore[arg-type]
    tok.train_from_iterator(_training_text(documents), trainer=trainer, length=length)
    tok = canonical_ids(tok)
    check_special_tokens(tok, f"trained {kind} tokenizer")
    return tok


def canonical_ids(tok: Tokenizer) -> Tokenizer:
    """The same corpus must give the same token ids: the WordPiece and Unigram trainers number tokens of
    equal rank in hash-map order, which changes from one process to the next. Special tokens keep
    their ids; the rest are renumbered by (Unigram score, then) token text."""
    spec = json.loads(tok.to_str())
    model = spec["model"]
    if isinstance(model.get("vocab"), dict):  # WordPiece, BPE: token -> id
        pieces = sorted((t for t, i in model["vocab"].items() if i >= NUM_SPECIAL))
        model["vocab"] = {**{t: i for t, i in model["vocab"].items() if i < NUM_SPECIAL},
                          **{t: NUM_SPECIAL + n for n, t in enumerate(pieces)}}
    elif isinstance(model.get("vocab"), list):  # Unigram: [piece, log-probability] by id
        # Its EM sums in parallel (scores differ in the last bits: rounded), and it appends the required
        # characters it did not keep, in hash order, with scores stepping down by 1e-4: one score for all.
        head = model["vocab"][:NUM_SPECIAL]
        rest = [[piece, round(score, 9)] for piece, score in model["vocab"][NUM_SPECIAL:]]
        steps = [i for i in range(len(rest) - 1) if abs(rest[i][1] - rest[i + 1][1] - 1e-4) < 1e-7]
        if steps:
            floor = min(score for _, score in rest[steps[0]:])
            for entry in rest[steps[0]:]:
                entry[1] = floor
        model["vocab"] = head + sorted(rest, key=lambda entry: (-entry[1], entry[0]))
    return Tokenizer.from_str(json.dumps(spec))


def check_special_tokens(tok: Tokenizer, source: str) -> None:
    ids = [tok.token_to_id(t) for t in SPECIAL_TOKENS]
    if ids != list(range(NUM_SPECIAL)):
        found = ", ".join(f"{t}={i}" for t, i in zip(SPECIAL_TOKENS, ids))
        raise UserError(f"{source} must have special tokens {', '.join(SPECIAL_TOKENS)} as ids 0-4; found {found}")


def load_tokenizer(path: str | Path) -> Tokenizer:
    path = Path(path).expanduser()
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as err:  # noqa: BLE001 - the Rust error text is the useful part
        raise UserError(f"cannot load tokenizer.path={path}: {str(err).splitlines()[0]}") from None
    check_special_tokens(tok, f"tokenizer.path={path}")
    return tok


def tokenizer_for(documents: Iterable[str], corpus_key: str, kind: str, vocab_size: int, lowercase: bool,
                  min_frequency: int, cache_dir: Path, length: Optional[int] = None) -> Tokenizer:
    """Train on `documents` (streamed once), or reuse the tokenizer cached for the same corpus and settings."""
    settings = json.dumps([corpus_key, kind, vocab_size, lowercase, min_frequency, MAX_WORD_CHARS])
    path = cache_dir / f"tokenizer-{hashlib.sha256(settings.encode()).hexdigest()[:16]}.json"
    if path.is_file():
        try:
            tok = Tokenizer.from_file(str(path))
            log.info("reusing tokenizer %s", path)
            return tok
        except Exception as err:  # noqa: BLE001 - a torn or damaged cache file: train it again
            log.warning("the cached tokenizer %s is unreadable (%s): training it again", path, str(err).splitlines()[0])
    if length is None and hasattr(documents, "__len__"):
        length = len(documents)  # type: ignore[arg-type]
    log.info("training %s tokenizer (vocab %d) on %s documents", kind, vocab_size, length or "the")
    tok = train_tokenizer(kind, documents, vocab_size, lowercase, min_frequency, length)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, tok.to_str())  # a crash never leaves half a tokenizer behind
    # Return what later runs will load: Unigram scores change in the last digits on a JSON round trip,
    # and the token cache is keyed by the tokenizer's JSON.
    return Tokenizer.from_file(str(path))
