"""Training examples as token ranges into a TokenizedCorpus: packed single segments (sentence=none) or
sentence pairs (nsp, sop). An example is four offsets and a label, never a copy of tokens, so even a
large corpus's example table is small; `encode_example` builds the model inputs when one is drawn."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from lightning_bert.data.tokenizer import CLS_ID, SEP_ID
from lightning_bert.errors import UserError

# b_start = b_end = -1 for single segments; label -1 = none, nsp 1 = B is random, sop 1 = swapped.
EXAMPLE_DTYPE = np.dtype([("a_start", np.int64), ("a_end", np.int64), ("b_start", np.int64),
                          ("b_end", np.int64), ("label", np.int8)])
SENTENCE_TASKS = ("none", "nsp", "sop")
Row = tuple[int, int, int, int, int]


def _chunks(corpus: Any, budget: int) -> tuple[list[int], list[int], list[int]]:
    """Sentences cut into pieces of at most `budget` tokens (most are one piece; empty ones vanish).
    Returns piece starts, piece ends and, per document, the index of its first piece ([D+1])."""
    offsets = np.asarray(corpus.sentence_offsets, dtype=np.int64)
    lengths = np.diff(offsets)
    pieces = -(-lengths // budget)  # ceil
    first = np.concatenate([[0], np.cumsum(pieces)])
    sentence = np.repeat(np.arange(len(lengths)), pieces)
    starts = offsets[sentence] + (np.arange(first[-1]) - first[sentence]) * budget
    ends = np.minimum(starts + budget, offsets[sentence + 1])
    return starts.tolist(), ends.tolist(), first[np.asarray(corpus.document_offsets)].tolist()


def _pack(corpus: Any, docs: list[int], budget: int, cross_doc: bool, first_used: int = 0) -> list[Row]:
    """Fill examples to exactly `budget` slots from the token stream (RoBERTa FULL-SENTENCES with
    cross_doc, DOC-SENTENCES without): a sentence that does not fit continues in the next example, so
    no slot stays empty except at the end of a document (DOC-SENTENCES) or of a contiguous run of
    documents. An example is one contiguous token range, so it only crosses into a document that
    directly follows in the corpus; each crossing costs one slot, the [SEP] encode_example inserts.
    `first_used` > 0 shortens the first example, which shifts every later boundary (a new packing)."""
    sentences, documents = np.asarray(corpus.sentence_offsets), np.asarray(corpus.document_offsets)
    rows: list[Row] = []
    start, end, used = -1, -1, 0  # current example's token range and slots used; start < 0 = none open
    offset = first_used  # slots the very first example gives up
    for d in docs:
        lo, hi = int(sentences[documents[d]]), int(sentences[documents[d + 1]])
        if start >= 0 and (not cross_doc or lo != end or used + 1 >= budget):
            rows.append((start, end, -1, -1, -1))  # a gap in the stream, or no room for the [SEP] and a token
            start = -1
        if start >= 0:
            used += 1  # the [SEP] before this document's first token
        pos = lo
        while pos < hi:
            if start < 0:
                start, used, offset = pos, offset, 0
            take = min(hi - pos, budget - used)
            pos, used, end = pos + take, used + take, pos + take
            if used >= budget:
                rows.append((start, end, -1, -1, -1))
                start, used = -1, 0
    if start >= 0:
        rows.append((start, end, -1, -1, -1))
    return rows


def _truncate(a: list[int], b: list[int], max_tokens: int, rng: np.random.Generator) -> None:
    """BERT's truncate_seq_pair in closed form: tokens leave the longer segment one at a time (B on
    ties), each from a random end, so the count from the front is Binomial(cut, 0.5). For SOP as for
    NSP: cutting only the outer ends (A's front, B's back) kept the two segments adjacent but marked
    their order on the surface, which a linear probe on an NSP-trained model read at 68%."""
    la, lb = a[1] - a[0], b[1] - b[0]
    excess = la + lb - max_tokens
    if excess <= 0:
        return
    rest = max(0, excess - abs(la - lb))  # removed after the two are level: B gets the odd one
    cut_a = excess - (rest - rest // 2) if la > lb else rest // 2
    cut_b = excess - cut_a
    front_a, front_b = int(rng.binomial(cut_a, 0.5)), int(rng.binomial(cut_b, 0.5))
    a[0], a[1] = a[0] + front_a, a[1] - (cut_a - front_a)
    b[0], b[1] = b[0] + front_b, b[1] - (cut_b - front_b)


def _pairs(starts: list[int], ends: list[int], doc_first: list[int], docs: list[int], max_tokens: int,
           rng: np.random.Generator, short_seq_prob: float, sop: bool) -> list[Row]:
    """BERT's create_instances_from_document over every document (ALBERT's SOP variant when `sop`)."""
    rows: list[Row] = []
    for k, d in enumerate(docs):
        i, last = doc_first[d], doc_first[d + 1]
        while i < last:
            # Unlike BERT (once per document) the target length is drawn per example.
            target = int(rng.integers(2, max_tokens + 1)) if rng.random() < short_seq_prob else max_tokens
            j, length = i, 0
            while j < last and length < target:
                length += ends[j] - starts[j]
                j += 1
            # The label is drawn before the segments, and never redrawn, so labels stay a fair coin.
            label = int(rng.random() < 0.5)
            if j - i == 1:
                if j == last:
                    break  # a document's lone last piece is dropped whatever the label
                if sop or not label:
                    j += 1  # an adjacent pair needs two pieces
            if j - i == 1:
                cut = i + 1
            elif sop:  # the piece boundary nearest the middle: neither segment is longer by construction
                middle = (starts[i] + ends[j - 1]) / 2
                cut = min(range(i + 1, j), key=lambda c: (abs(starts[c] - middle), rng.random()))
            else:
                cut = int(rng.integers(i + 1, j))  # A = pieces [i, cut)
            a = [starts[i], ends[cut - 1]]
            if label and not sop:  # B from a random other document of the subset, never this one
                other = int(rng.integers(len(docs) - 1))
                od = docs[other + (other >= k)]
                c, o_last = int(rng.integers(doc_first[od], doc_first[od + 1])), doc_first[od + 1]
                b = [starts[c], ends[c]]
                while c + 1 < o_last and b[1] - b[0] < target - (a[1] - a[0]):
                    c += 1
                    b[1] = ends[c]
                i = cut  # the pieces after A were not used: put them back
            else:
                b = [starts[cut], ends[j - 1]]
                i = j
            _truncate(a, b, max_tokens, rng)
            if sop and label:
                a, b = b, a
            rows.append((a[0], a[1], b[0], b[1], label))
    return rows


def build_examples(corpus: Any, sentence: str, max_seq_length: int, rng: np.random.Generator,
                   short_seq_prob: float = 0.1, cross_doc: bool = True,
                   doc_ids: Optional[np.ndarray] = None, shift: bool = False) -> np.ndarray:
    """All examples of the documents `doc_ids` (default all) as an EXAMPLE_DTYPE array, in corpus order.
    none: packed single segments filling max_seq_length-2 slots (a [SEP] per crossed document boundary
    takes one); nsp/sop: pairs of <= max_seq_length-3 tokens. Every random choice comes from `rng`;
    `shift` starts the packing at a random offset (a static-masking duplicate's own packing)."""
    if sentence not in SENTENCE_TASKS:
        raise UserError(f"sentence task {sentence!r} is unknown; choose one of {', '.join(SENTENCE_TASKS)}")
    budget = max_seq_length - (2 if sentence == "none" else 3)
    starts, ends, doc_first = _chunks(corpus, budget)
    wanted = range(len(doc_first) - 1) if doc_ids is None else np.unique(np.asarray(doc_ids, dtype=np.int64))
    docs = [int(d) for d in wanted if doc_first[d] < doc_first[d + 1]]  # documents with tokens
    if sentence == "none":
        rows = _pack(corpus, docs, budget, cross_doc, int(rng.integers(1, budget)) if shift else 0)
    else:
        if sentence == "nsp" and len(docs) < 2:
            raise UserError(f"objective.sentence=nsp needs at least two non-empty documents; found {len(docs)}")
        rows = _pairs(starts, ends, doc_first, docs, budget, rng, short_seq_prob, sop=sentence == "sop")
    return np.array(rows, dtype=EXAMPLE_DTYPE)


def _boundaries(corpus: Any, start: int, end: int) -> list[int]:
    """Token offsets of the document starts strictly inside (start, end): where packing crossed."""
    sentences, documents = corpus.sentence_offsets, corpus.document_offsets
    s_lo, s_hi = sentences.searchsorted(start, "right"), sentences.searchsorted(end, "left")
    if s_lo >= s_hi:
        return []
    d_lo, d_hi = documents.searchsorted(s_lo, "left"), documents.searchsorted(s_hi, "left")
    return sorted(set(sentences[documents[d_lo:d_hi]].tolist()))  # empty documents share an offset


def document_layout(special: np.ndarray) -> dict[str, np.ndarray]:
    """A packed row's documents (data.pack_attention=document) from its special tokens, [CLS] A [SEP] B [SEP]:
    document_ids counts the [SEP]s before each token, so [CLS] joins the first document and each [SEP] the
    document it closes; position_ids restart at 0 where a document starts (the row start, after each [SEP])."""
    closes = special.astype(np.int64)
    closes[0] = 0  # the [CLS]
    document_ids = np.concatenate([[0], np.cumsum(closes)[:-1]])
    starts = np.concatenate([[0], closes[:-1].nonzero()[0] + 1])  # where each document begins
    return {"document_ids": document_ids, "position_ids": np.arange(len(special)) - starts[document_ids]}


def encode_example(corpus: Any, example: Any, max_seq_length: int) -> dict[str, np.ndarray]:
    """[CLS] A [SEP] (B [SEP]), with a [SEP] wherever a packed A crosses a document boundary.
    Returns unpadded input_ids, token_type_ids (int64) and word_starts, special (bool)."""
    a_start, a_end, b_start, b_end, _ = example.item()  # one EXAMPLE_DTYPE row
    cuts = _boundaries(corpus, a_start, a_end) if b_start < 0 else []  # pairs never cross documents
    len_a = a_end - a_start + len(cuts)
    length = len_a + 2 + (b_end - b_start + 1 if b_start >= 0 else 0)
    if length > max_seq_length:
        raise ValueError(f"example of {length} tokens exceeds max_seq_length={max_seq_length}")
    # Plain ndarray views: slicing a np.memmap costs ~10x more (its __array_finalize__ runs in Python).
    tokens, starts = np.asarray(corpus.tokens), np.asarray(corpus.word_starts)
    ids = np.empty(length, dtype=np.int64)
    words = np.empty(length, dtype=bool)
    special = np.zeros(length, dtype=bool)
    seps = [0]  # positions of [CLS] and every [SEP]
    pos, prev = 1, a_start
    for cut in cuts + [a_end]:
        ids[pos:pos + cut - prev] = tokens[prev:cut]
        words[pos:pos + cut - prev] = starts[prev:cut]
        words[pos] = True  # a segment always begins a word (it may start mid-word after truncation)
        pos += cut - prev
        seps.append(pos)
        pos, prev = pos + 1, cut
    if b_start >= 0:
        ids[pos:-1] = tokens[b_start:b_end]
        words[pos:-1] = starts[b_start:b_end]
        words[pos] = True
        seps.append(length - 1)
    ids[seps] = SEP_ID
    ids[0] = CLS_ID
    words[seps] = True
    special[seps] = True
    types = np.zeros(length, dtype=np.int64)
    types[len_a + 2:] = 1
    return {"input_ids": ids, "token_type_ids": types, "word_starts": words, "special": special}
