"""Streaming training data on Hugging Face `datasets` (data.backend=hf_streaming).

For corpora on object storage, or too large for one token cache per cluster: documents stream
through `datasets.IterableDataset` (parquet / JSON lines / a hub or local dataset, or any of our own
file formats through a generator, one shard per file), are split over ranks with
`datasets.distributed.split_dataset_by_node`, tokenized and packed on the fly, and served by
torchdata's `StatefulDataLoader`, whose `state_dict` (the dataset's shard and offset included) Lightning
stores in checkpoints, so a resumed run continues mid-epoch where it stopped.

Scope: packed examples (objective.sentence=none, RoBERTa FULL-SENTENCES) with dynamic masking; the
mask of an example is a function of (seed, epoch, its token ids), so it is the same after a resume.
Config refuses the rest (pairs, static masks, PLM). The held-out evaluation keeps the cached path.

The entry point for the datamodule: `streaming_train_loader(cfg, tokenizer, world_size, rank)`.
"""
from __future__ import annotations

import json
import logging
import os
import zlib
from collections import deque
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tokenizers import Tokenizer

from lightning_bert.data.batch import collate_pretraining
from lightning_bert.data.corpus import expand_paths, file_fingerprint, hf_load_args, iter_documents
from lightning_bert.data.examples import document_layout
from lightning_bert.data.masking import dynamic_rng, mask_example
from lightning_bert.data.sentences import split_sentences
from lightning_bert.data.tokenizer import CLS_ID, SEP_ID, load_tokenizer, tokenizer_for
from lightning_bert.errors import UserError

log = logging.getLogger(__name__)
DOCS_PER_MAP = 64  # documents tokenized per batched map call (one encode_batch)
TOKENIZER_DOCS = 20_000  # documents at the head of the stream a tokenizer is trained on (no tokenizer.path)
_ARROW_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json"}


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise UserError("data.backend=hf_streaming needs the datasets package: pip install datasets torchdata") from None
    return datasets


def _our_format(paths: list[str], fmt: str, text_field: str) -> Iterator[dict[str, str]]:
    for doc in iter_documents(paths, fmt, text_field):
        yield {"text": doc}


def document_stream(data: DictConfig) -> Any:
    """The corpus as a streaming `datasets.IterableDataset` with one column, "text"; nothing is downloaded
    or read ahead. Files in parquet / JSON lines go through datasets' own builders, other formats
    (WikiExtractor, WikiText, plain text, books) through our readers, one shard per file."""
    datasets = _datasets()
    if data.hf_dataset:
        args, kwargs = hf_load_args(data.hf_dataset)
        try:
            ds = datasets.load_dataset(*args, split=data.hf_split, streaming=True, **kwargs)
        except (OSError, ValueError, ConnectionError) as e:
            msg = str(e).strip().split("\n")[0]
            raise UserError(f"cannot stream data.hf_dataset={data.hf_dataset!r}: {msg}") from None
    elif data.path:
        files = expand_paths(list(data.path))
        builders = {_ARROW_BUILDERS.get(os.path.splitext(f.removesuffix(".gz"))[1]) for f in files}
        if len(builders) == 1 and None not in builders and data.format in ("auto", "jsonl"):
            ds = datasets.load_dataset(builders.pop(), data_files=files, split="train", streaming=True)
        else:
            ds = datasets.IterableDataset.from_generator(
                _our_format, gen_kwargs={"paths": files, "fmt": data.format, "text_field": data.text_field})
            return ds  # already a single "text" column
    else:
        raise UserError("data.backend=hf_streaming needs data.path (files or globs) or data.hf_dataset")
    field = data.text_field
    if ds.column_names is not None and field not in ds.column_names:
        raise UserError(f"data.text_field={field!r} is not a column of the stream; columns: {', '.join(ds.column_names)}")
    if field != "text":
        ds = ds.rename_column(field, "text")
    return ds.select_columns(["text"])


def streaming_tokenizer(cfg: DictConfig) -> Tokenizer:
    """tokenizer.path if given, else one trained on the first TOKENIZER_DOCS documents of the stream
    (cached under data.cache_dir, keyed by the source and the settings)."""
    tok, data = cfg.tokenizer, cfg.data
    if tok.path:
        return load_tokenizer(tok.path)
    count = int(data.max_documents or TOKENIZER_DOCS)
    source: Any = ([data.hf_dataset, data.hf_split] if data.hf_dataset
                   else [file_fingerprint(p) for p in expand_paths(list(data.path))])
    key = "stream-" + json.dumps([source, data.text_field, data.format, count])
    head = (row["text"] for row in document_stream(data).take(count))
    return tokenizer_for(head, key, tok.kind, tok.vocab_size, tok.lowercase, tok.min_frequency,
                         Path(data.cache_dir).expanduser())


class Packer:
    """Batched map: documents -> sentences -> token ids -> packed rows of at most max_seq_length tokens,
    [CLS] first, [SEP] last and between documents (cross_doc), sentences kept whole where they fit.
    Rows never span two map batches, so the dataset's state_dict resumes exactly."""

    def __init__(self, tokenizer: Tokenizer, max_seq_length: int, cross_doc: bool):
        self.tokenizer, self.budget, self.cross_doc = tokenizer, max_seq_length - 2, cross_doc

    def __call__(self, batch: dict[str, list[str]]) -> dict[str, list[list[int]]]:
        docs = [[s for s in split_sentences(text) if s.strip()] for text in batch["text"] if text]
        flat = [s for doc in docs for s in doc]
        encoded = iter(self.tokenizer.encode_batch(flat, add_special_tokens=False)) if flat else iter(())
        rows: dict[str, list[list[int]]] = {"input_ids": [], "word_starts": []}
        ids: list[int] = []
        starts: list[int] = []

        def emit() -> None:
            if ids:
                rows["input_ids"].append([CLS_ID, *ids, SEP_ID])
                rows["word_starts"].append([1, *starts, 1])
                ids.clear()
                starts.clear()

        for d, doc in enumerate(docs):
            if d and ids and not self.cross_doc:
                emit()
            elif d and ids:
                ids.append(SEP_ID)  # a document boundary inside a packed row
                starts.append(1)
            for _ in doc:
                enc = next(encoded)
                words = [-1 if w is None else w for w in enc.word_ids]
                sent_starts = [1] + [int(a != b) for a, b in zip(words[1:], words[:-1])]
                sent_ids = list(enc.ids)
                while sent_ids:
                    if len(ids) + len(sent_ids) > self.budget and ids:
                        emit()
                    take = self.budget - len(ids)
                    ids.extend(sent_ids[:take])
                    starts.extend(sent_starts[:take])
                    sent_ids, sent_starts = sent_ids[take:], sent_starts[take:]
                    if sent_ids:
                        emit()
        emit()
        return rows


class MaskingCollate:
    """Masks each packed row (seeded by seed, epoch and the row's own ids, so a resumed run draws the
    same masks), then pads the batch with `collate_pretraining`."""

    def __init__(self, cfg: DictConfig, vocab_size: int):
        self.masking = OmegaConf.to_object(cfg.masking) if isinstance(cfg.masking, DictConfig) else cfg.masking
        self.seed, self.vocab_size, self.epoch = int(cfg.run.seed), vocab_size, 0
        self.documents = cfg.data.get("pack_attention", "cross") == "document"

    def __call__(self, rows: list[dict[str, list[int]]]) -> dict[str, Any]:
        items = []
        for row in rows:
            ids = np.asarray(row["input_ids"], dtype=np.int64)
            special = (ids == CLS_ID) | (ids == SEP_ID)
            rng = dynamic_rng(self.seed, self.epoch, zlib.crc32(ids.tobytes()))
            item = mask_example(ids, special, np.asarray(row["word_starts"], dtype=bool), self.masking,
                                self.vocab_size, rng)
            item["token_type_ids"] = np.zeros(len(ids), dtype=np.int64)
            item["attention_mask"] = np.ones(len(ids), dtype=np.int64)
            if self.documents:  # the packer puts a [SEP] only at document boundaries and the row end
                item.update(document_layout(special))
            items.append(item)
        return collate_pretraining(items)


def streaming_dataset(cfg: DictConfig, tokenizer: Tokenizer, world_size: int = 1, rank: int = 0) -> Any:
    """This rank's share of the packed stream: whole shards per rank when the shard count divides by
    the world size, else every rank reads all and keeps one example in world_size."""
    from datasets.distributed import split_dataset_by_node

    ds = split_dataset_by_node(document_stream(cfg.data), rank=rank, world_size=world_size)
    if ds.n_shards % world_size:
        log.warning("hf_streaming: %d shards over %d ranks: each rank reads every shard and skips the others' "
                    "examples (use a multiple of the world size)", ds.n_shards, world_size)
    packer = Packer(tokenizer, int(cfg.data.max_seq_length), bool(cfg.data.cross_doc))
    return ds.map(packer, batched=True, batch_size=DOCS_PER_MAP, remove_columns=["text"])


def streaming_train_loader(cfg: DictConfig, tokenizer: Tokenizer, world_size: int = 1, rank: int = 0,
                           batch_size: Optional[int] = None, lookahead: int = 1) -> Any:
    """The training loader of data.backend=hf_streaming for this rank: a torchdata StatefulDataLoader
    (resumable: `state_dict()` / `load_state_dict()`, saved by Lightning in checkpoints). Its
    `collate_fn.epoch` selects the dynamic masks of an epoch (set it from the datamodule's set_epoch).

    `lookahead`: batches the consumer fetches ahead of the one it trains on. Lightning's fetcher runs one
    ahead (to see the end of an epoch), so with the default 1 a checkpoint resumes at the first batch
    not yet trained on instead of skipping the prefetched one; give 0 when iterating by hand."""
    try:
        from torchdata.stateful_dataloader import StatefulDataLoader
    except ImportError:
        raise UserError("data.backend=hf_streaming needs torchdata: pip install torchdata torch==<your torch>") from None

    class Loader(StatefulDataLoader):
        def __iter__(self) -> Iterator[Any]:
            iterator = super().__iter__()
            states: deque = deque(maxlen=lookahead + 1)
            self._states = states
            while True:
                states.append(super().state_dict())  # the state after the batches yielded so far
                try:
                    batch = next(iterator)
                except StopIteration:
                    return
                yield batch

        def state_dict(self) -> dict[str, Any]:
            states = getattr(self, "_states", ())
            if lookahead and len(states) > lookahead:
                return states[-lookahead]  # as if the `lookahead` prefetched batches were not yet drawn
            return super().state_dict()

    return Loader(streaming_dataset(cfg, tokenizer, world_size, rank), batch_size=batch_size or int(cfg.trainer.batch_size),
                  collate_fn=MaskingCollate(cfg, tokenizer.get_vocab_size()), num_workers=int(cfg.data.num_workers))
