"""The canonical evaluation set: one fixed held-out MLM set shared by every variant of an ablation.

It depends only on the corpus, the held-out documents, the tokenizer and `data.max_seq_length`: single
segments of held-out documents (never crossing a document), token-level masking at 15% with 80/10/10
drawn from a fixed seed. Never on the run's sentence task, masking unit or mode, seed or batch size,
so `eval/*` of two runs is measured on identical inputs. Each masked position also carries the number
of characters its original token covers, for a per-character loss that compares across tokenizers.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from lightning_bert.data.examples import build_examples, encode_example
from lightning_bert.data.masking import IGNORE, mask_example
from lightning_bert.data.tokenizer import NUM_SPECIAL

EVAL_SEED = 20_240_601  # fixed: never run.seed
EVAL_MASKING = SimpleNamespace(unit="token", rate=0.15, mask_prob=0.8, random_prob=0.1, fixed_count=False)
EVAL_BATCH_SIZE = 32  # fixed too: padding per batch must not depend on the run's batch size
MAX_EXAMPLES = 512  # enough for a stable loss (~9k predictions at length 128), cheap at every validation


def token_characters(tokenizer: Any) -> np.ndarray:
    """Characters each vocabulary entry covers in the (normalised) text: WordPiece's '##' continuation
    marker, and the space markers of byte-level BPE ('Ġ') and Unigram ('▁') count as described; special
    tokens cover none."""
    vocab = tokenizer.get_vocab()
    chars = np.zeros(tokenizer.get_vocab_size(), dtype=np.int64)
    for token, index in vocab.items():
        if index < NUM_SPECIAL:
            continue
        chars[index] = max(1, len(token[2:] if token.startswith("##") else token))
    return chars


def canonical_examples(corpus: Any, valid_ids: np.ndarray, max_seq_length: int) -> np.ndarray:
    """Single segments of the held-out documents (DOC-SENTENCES packing), the first MAX_EXAMPLES."""
    rng = np.random.default_rng(EVAL_SEED)  # unused by packing; passed for the signature
    examples = build_examples(corpus, "none", max_seq_length, rng, cross_doc=False, doc_ids=valid_ids)
    return examples[:MAX_EXAMPLES]


class CanonicalSet(Dataset):
    """Fixed masked items: mask of example i = f(EVAL_SEED, i); keys as the training batches plus
    `mlm_chars` (characters of the original token at predicted positions, 0 elsewhere)."""

    def __init__(self, corpus: Any, examples: np.ndarray, max_seq_length: int, vocab_size: int,
                 characters: np.ndarray):
        self.corpus, self.examples, self.max_seq_length = corpus, examples, max_seq_length
        self.vocab_size, self.characters = vocab_size, characters

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        encoded = encode_example(self.corpus, self.examples[index], self.max_seq_length)
        rng = np.random.default_rng([EVAL_SEED, index])
        item = mask_example(encoded["input_ids"], encoded["special"], encoded["word_starts"], EVAL_MASKING,
                            self.vocab_size, rng)
        labels = item["mlm_labels"]
        item["mlm_chars"] = np.where(labels != IGNORE, self.characters[np.maximum(labels, 0)], 0)
        item["token_type_ids"] = encoded["token_type_ids"]
        item["attention_mask"] = np.ones(len(labels), dtype=np.int64)
        return item
