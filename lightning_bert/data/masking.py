"""MLM masking of one encoded example: token, whole-word or SpanBERT span selection, then 80/10/10.

A pure function of (arrays, config, rng), so a static mask is reproduced from static_rng(seed,
duplicate, example) and a dynamic one from dynamic_rng(seed, epoch, example) in any process, after
any restart. Runs per example on the CPU: few numpy calls, short Python loops over words or spans.
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np

from lightning_bert.data.tokenizer import MASK_ID, NUM_SPECIAL, PAD_ID

IGNORE = -100  # mlm_labels value of positions that are not predicted (torch cross-entropy default)
_STATIC, _DYNAMIC = 0, 1  # stream tags: a static and a dynamic stream never coincide


def static_rng(seed: int, duplicate: int, example_index: int) -> np.random.Generator:
    """The generator of a static mask: fixed per (seed, duplicate, example), whatever the epoch."""
    return np.random.default_rng([seed, _STATIC, duplicate, example_index])


def dynamic_rng(seed: int, epoch: int, example_index: int) -> np.random.Generator:
    """The generator of a dynamic mask: a new mask each epoch, the same one after a restart."""
    return np.random.default_rng([seed, _DYNAMIC, epoch, example_index])


@functools.lru_cache(maxsize=None)
def _span_lengths(p: float, longest: int) -> tuple[np.ndarray, float, float]:
    """CDF, mean and second moment of SpanBERT's span length in words: Geometric(p) truncated at
    `longest` and renormalised (mean 3.8 for p=0.2, longest=10)."""
    lengths = np.arange(1, longest + 1)
    probs = p * (1 - p) ** (lengths - 1)
    probs /= probs.sum()
    return np.cumsum(probs), float(lengths @ probs), float(lengths ** 2 @ probs)


def _words(maskable: np.ndarray, word_starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) positions of the words made of maskable tokens. A token right after
    a special one always starts a word, so no word spans a [CLS]/[SEP] (word_starts alone only
    knows the tokenizer's words, e.g. a segment cut mid-word)."""
    starts = np.array(word_starts, dtype=bool)  # a copy
    starts[1:] |= ~maskable[:-1]
    starts &= maskable
    edges = np.append(starts | ~maskable, True).nonzero()[0]  # a word ends at the next edge
    first = starts[edges[:-1]]
    return edges[:-1][first], edges[1:][first]


def _select_words(begin: np.ndarray, end: np.ndarray, budget: int, rng: np.random.Generator) -> list[int]:
    """BERT whole-word masking: words in random order, each added while it fits in the budget."""
    chosen, covered = [], 0
    sizes = (end - begin).tolist()
    for w in rng.permutation(len(sizes)).tolist():
        if covered >= budget:
            break
        if covered + sizes[w] <= budget:
            chosen.append(w)
            covered += sizes[w]
    return sorted(chosen)


def _free_starts(taken: np.ndarray, segment: np.ndarray, m: int) -> np.ndarray:
    """Word indices where a span of m words fits: one segment, no taken word in it or next to it."""
    first = np.arange(max(len(taken) - m + 1, 0))
    blocked = np.concatenate([[0], np.cumsum(taken)])
    clear = blocked[np.minimum(first + m + 1, len(taken))] == blocked[np.maximum(first - 1, 0)]
    return first[clear & (segment[first] == segment[first + m - 1])]


def _select_spans(begin: np.ndarray, end: np.ndarray, segment: np.ndarray, budget: int, cfg: Any,
                  rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """SpanBERT: spans of whole words, length ~ truncated Geometric(span_p), at a random word start,
    inside one segment, never overlapping or touching another span (boundary tokens stay visible for
    SBO). Spans are added while fewer than `level` tokens are covered; that never looks at the next
    span's length, so realised lengths keep their distribution (Wald's identity). The last span
    overshoots `level` by the renewal excess E[S(S-1)]/2E[S] on average (S = tokens per span), so
    `level` sits that far below the budget and the expected count equals the budget without
    cutting spans. fixed_count instead stops exactly at the budget, cutting the last span short."""
    num_words = len(begin)
    if budget <= 0 or num_words == 0:
        return [], []
    cdf, mean_words, square_words = _span_lengths(cfg.span_p, cfg.span_max)
    sizes = end - begin  # a span's tokens: a sum of word sizes, taken as independent draws
    t1, t2 = sizes.sum() / num_words, np.dot(sizes, sizes) / num_words
    span_mean = mean_words * t1
    span_square = mean_words * (t2 - t1 * t1) + square_words * t1 * t1
    level = budget
    if not cfg.fixed_count:
        level = int(budget - (span_square - span_mean) / (2 * span_mean) + rng.random())
        if level <= 0:  # tiny budget: one span with probability budget / span_mean (same expectation)
            level = int(rng.random() * span_mean < budget)
    tries = 2 * int(level / span_mean) + 8  # span lengths drawn in one go: far more than needed
    lengths = (np.searchsorted(cdf, rng.random(tries), side="right") + 1).tolist()
    places = iter((rng.random(9 * tries) * num_words).astype(np.int64).tolist())
    b_list, e_list, seg = begin.tolist(), end.tolist(), segment.tolist()
    taken = [False] * num_words
    spans, covered = [], 0
    for m in lengths:
        if covered >= level:
            break
        for _ in range(8):  # a few random places; usually the first one fits
            w = next(places)
            if w + m <= num_words and seg[w] == seg[w + m - 1] and not any(taken[max(w - 1, 0):w + m + 1]):
                break
        else:  # crowded: choose among all free places, so long spans are not under-represented
            free = _free_starts(np.asarray(taken), segment, m)
            if not len(free):
                continue
            w = int(free[int(next(places) * len(free) / num_words)])
        taken[w:w + m] = [True] * m
        span_end = e_list[w + m - 1]
        if cfg.fixed_count:
            span_end = min(span_end, b_list[w] + level - covered)
        spans.append((b_list[w], span_end))
        covered += span_end - b_list[w]
    spans.sort()
    return [s for s, _ in spans], [e for _, e in spans]


def random_share(cfg: Any) -> float:
    """masking.random_prob, where null means half of what [MASK] leaves (BERT's 10% at 0.8, none at 1.0)."""
    return cfg.random_prob if cfg.random_prob is not None else round((1 - cfg.mask_prob) / 2, 12)


def mask_example(input_ids: np.ndarray, special: np.ndarray, word_starts: np.ndarray, cfg: Any,
                 vocab_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Select positions by cfg.unit at cfg.rate, then replace them 80/10/10 (cfg.mask_prob,
    cfg.random_prob). Returns input_ids (masked copy), mlm_labels (original id where selected, IGNORE
    elsewhere) and, for spans, sbo_left/sbo_right (positions just outside the span, -1 elsewhere)."""
    maskable = ~special & (input_ids != PAD_ID)
    length = len(input_ids)
    if cfg.unit == "token":
        candidates = maskable.nonzero()[0]
        # fixed_count: round(rate * n) with n = maskable tokens (issue #3 says round(p * L); the
        # special tokens and padding in L can never be selected, so they would skew the rate).
        if cfg.fixed_count:
            selected = np.sort(rng.permutation(candidates)[:round(cfg.rate * len(candidates))])
        else:
            selected = candidates[rng.random(len(candidates)) < cfg.rate]
        decide = rng.random(len(selected))
    elif cfg.unit in ("word", "span"):
        begin, end = _words(maskable, word_starts)
        # Budget in tokens: exact with fixed_count, else Binomial(n, rate), the token unit's mean and
        # spread per sequence, so the three units differ only in what they group together.
        count = int(maskable.sum())
        budget = round(cfg.rate * count) if cfg.fixed_count else int(rng.binomial(count, cfg.rate))
        if cfg.unit == "word":
            chosen = _select_words(begin, end, budget, rng)
            starts, ends = begin[chosen], end[chosen]
        else:
            segment = np.cumsum(~maskable)[begin]  # words between the same two special tokens
            span_starts, span_ends = _select_spans(begin, end, segment, budget, cfg, rng)
            starts, ends = np.array(span_starts, dtype=np.int64), np.array(span_ends, dtype=np.int64)
        sizes = ends - starts
        marks = np.zeros(length + 1, dtype=np.int64)
        marks[starts] += 1  # words/spans never overlap: starts are unique, and so are ends
        marks[ends] -= 1
        selected = marks[:-1].cumsum().nonzero()[0]
        # SpanBERT decides 80/10/10 once per span; whole-word masking per token, as BERT did.
        decide = rng.random(len(starts)).repeat(sizes) if cfg.unit == "span" else rng.random(len(selected))
    else:
        raise ValueError(f"unknown masking unit {cfg.unit!r}; choose token, word or span")
    ids = input_ids.copy()
    labels = np.full(length, IGNORE, dtype=np.int64)
    labels[selected] = input_ids[selected]
    ids[selected[decide < cfg.mask_prob]] = MASK_ID
    swap = selected[(decide >= cfg.mask_prob) & (decide < cfg.mask_prob + random_share(cfg))]
    # Uniform over the non-special ids (rng.random is several times cheaper than rng.integers here).
    ids[swap] = NUM_SPECIAL + (rng.random(len(swap)) * (vocab_size - NUM_SPECIAL)).astype(np.int64)
    out = {"input_ids": ids, "mlm_labels": labels}
    if cfg.unit == "span":
        out["sbo_left"] = np.full(length, -1, dtype=np.int64)
        out["sbo_right"] = np.full(length, -1, dtype=np.int64)
        out["sbo_left"][selected] = (starts - 1).repeat(sizes)
        out["sbo_right"][selected] = ends.repeat(sizes)
    return out
