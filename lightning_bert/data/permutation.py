"""XLNet's permutation LM data: which tokens are predicted, and in which factorisation order.

One int array per example, `plm_order`:
  0        context: special tokens and the tokens that are not predicted (first in every order, all
           visible to everyone, none of them sees a target);
  1..T     the T targets, by their place in the sampled factorisation order (the last 1/K of it);
  -1       padding (added by collate: never seen, never predicted).
The attention masks follow from it (objectives.PermutationLM): the content stream of token i sees j when
order[j] <= order[i], the query stream of target t when order[j] < order[t]. There is no input corruption.

Targets are chosen as XLNet's data_utils._sample_mask does: n-gram spans of n = 1..max_span tokens with
P(n) ~ 1/n, each placed at a random offset inside a block of K*n tokens, blocks laid end to end; the
count is then topped up (or cut) to exactly T = n_tokens / K (stochastically rounded) with single tokens.
A pure function of (ids, special, K, max_span, rng): static and dynamic rules come from the generator
(data/masking.py static_rng / dynamic_rng). A few numpy calls per example, no per-token Python loop.
"""
from __future__ import annotations

import functools

import numpy as np

from lightning_bert.data.tokenizer import PAD_ID


@functools.lru_cache(maxsize=None)
def _span_cdf(max_span: int) -> tuple[np.ndarray, float]:
    """CDF and mean of XLNet's n-gram length: P(n) ~ 1/n for n in 1..max_span."""
    probs = 1.0 / np.arange(1, max_span + 1)
    probs /= probs.sum()
    return np.cumsum(probs), float(np.arange(1, max_span + 1) @ probs)


def sample_targets(count: int, k: int, max_span: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices in [0, count) of about count / K targets, in spans (see the module docstring)."""
    goal = int(count / k + rng.random())  # stochastic rounding: the share is exactly 1/K on average
    if goal <= 0:
        return np.zeros(0, dtype=np.int64)
    cdf, mean = _span_cdf(max_span)
    tries = int(count / (k * mean)) + 4  # about as many blocks as fit in the sequence, and a few more
    lengths = np.searchsorted(cdf, rng.random(tries), side="right") + 1
    blocks = k * lengths
    block_start = np.concatenate([[0], np.cumsum(blocks)[:-1]])
    starts = block_start + (rng.random(tries) * (blocks - lengths + 1)).astype(np.int64)
    fits = starts + lengths <= count
    starts, lengths = starts[fits], lengths[fits]
    covered = np.cumsum(lengths)
    keep = int(np.searchsorted(covered, goal, side="left")) + 1  # spans up to the one that reaches the goal
    starts, lengths = starts[:keep], lengths[:keep].copy()
    if len(lengths) and covered[len(lengths) - 1] > goal:
        lengths[-1] -= covered[len(lengths) - 1] - goal  # cut the last span to the exact count
    marks = np.zeros(count + 1, dtype=np.int64)
    np.add.at(marks, starts, 1)
    np.add.at(marks, starts + lengths, -1)
    chosen = marks[:-1].cumsum() > 0
    missing = goal - int(chosen.sum())
    if missing > 0:  # the blocks ran out before the goal: single tokens among the rest, as XLNet does
        free = np.flatnonzero(~chosen)
        chosen[free[rng.permutation(len(free))[:missing]]] = True
    return np.flatnonzero(chosen)


def permutation_example(input_ids: np.ndarray, special: np.ndarray, k: int, max_span: int,
                        rng: np.random.Generator) -> dict[str, np.ndarray]:
    """{input_ids (unchanged), plm_order} for one encoded example."""
    candidates = np.flatnonzero(~special & (input_ids != PAD_ID))
    targets = candidates[sample_targets(len(candidates), k, max_span, rng)]
    order = np.zeros(len(input_ids), dtype=np.int64)
    order[targets[rng.permutation(len(targets))]] = np.arange(1, len(targets) + 1)
    order[input_ids == PAD_ID] = -1
    return {"input_ids": input_ids, "plm_order": order}
