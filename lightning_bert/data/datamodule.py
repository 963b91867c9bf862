"""From config to batches: corpus -> tokenizer -> cached token arrays -> examples -> masked batches.

Batch keys: input_ids, token_type_ids, attention_mask [B, L]; mlm_labels [B, L] (-100 = not predicted);
sentence_label [B] for nsp/sop; sbo_left, sbo_right [B, L] for span masking; document_ids (-1 = padding)
and position_ids [B, L] under data.pack_attention=document (data/examples.py document_layout).
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import lightning.pytorch as pl
import numpy as np
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lightning_bert.data.batch import collate_pretraining
from lightning_bert.data.cache import TokenizedCorpus, cache_record, document_count, tokenized_corpus
from lightning_bert.data.canonical import EVAL_BATCH_SIZE, CanonicalSet, canonical_examples, token_characters
from lightning_bert.data.corpus import DocumentSource, builtin_source, file_source, hf_source
from lightning_bert.data.examples import build_examples, document_layout, encode_example
from lightning_bert.data.masking import IGNORE, dynamic_rng, mask_example, static_rng
from lightning_bert.data.permutation import permutation_example
from lightning_bert.data.static_masks import StoredMasks, stored_masks
from lightning_bert.data.tokenizer import load_tokenizer, tokenizer_for
from lightning_bert.errors import UserError

log = logging.getLogger(__name__)
SPLIT_SEED = 1234  # the train/valid split is fixed, whatever run.seed is: variants see the same data


def document_source(data: DictConfig) -> DocumentSource:
    """The configured corpus as a re-readable stream of documents with a cheap identity (`.key`)."""
    if data.hf_dataset:
        return hf_source(data.hf_dataset, data.hf_split, data.text_field, data.max_documents)
    if data.path:
        return file_source(list(data.path), data.format, data.text_field, data.max_documents)
    return builtin_source(data.max_documents)


def load_documents(data: DictConfig) -> list[str]:
    """All documents as a list: small corpora and tests only (prepare() streams them)."""
    return list(document_source(data))


def _skip_block(documents: Iterable[str], start: int, stop: int) -> Iterator[str]:
    """`documents` without those numbered start..stop-1 (the held-out block), streamed."""
    for i, doc in enumerate(documents):
        if not start <= i < stop:
            yield doc


def split_documents(num_documents: int, valid_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Hold out a contiguous block of whole documents (at least 2, so NSP can draw negatives), at a
    seeded place: (train ids, valid ids). Contiguous, so packing crosses documents in both splits."""
    if num_documents < 3:
        raise UserError(f"the corpus has {num_documents} document(s); at least 3 are needed (2 held out)")
    num_valid = max(2, round(valid_fraction * num_documents))
    if num_valid >= num_documents:
        raise UserError(f"data.valid_fraction={valid_fraction} holds out {num_valid} of the {num_documents} documents: "
                        "none is left to train on; lower it or use more documents")
    start = int(np.random.default_rng(SPLIT_SEED).integers(0, num_documents - num_valid + 1))
    ids = np.arange(num_documents)
    return np.concatenate([ids[:start], ids[start + num_valid:]]), ids[start:start + num_valid]


class PretrainDataset(Dataset):
    """Examples served with masks: static = f(seed, duplicate, example), dynamic = f(seed, epoch, example).

    With static masking, `examples` holds every duplicate's own examples one after another (BERT's
    data builder drew pairs and packing anew per duplicate); `duplicate_starts` marks where each begins.
    """

    def __init__(self, corpus: TokenizedCorpus, examples: np.ndarray, cfg: DictConfig, vocab_size: int,
                 static: bool, duplicate_starts: Optional[np.ndarray] = None):
        self.corpus, self.examples, self.vocab_size, self.static = corpus, examples, vocab_size, static
        # Plain values: a DictConfig attribute read costs ~13 us, and this runs per example per step.
        self.masking = OmegaConf.to_object(cfg.masking) if isinstance(cfg.masking, DictConfig) else cfg.masking
        self.max_seq_length, self.seed = int(cfg.data.max_seq_length), int(cfg.run.seed)
        self.duplicate_starts = np.zeros(1, dtype=np.int64) if duplicate_starts is None else duplicate_starts
        self.epoch = 0
        self.stored: Optional[StoredMasks] = None  # static masks read from the cache instead of drawn
        objective = cfg.objective  # XLNet's PLM: (K, max span); items carry plm_order, no corruption
        self.plm = (int(objective.plm_k), int(objective.plm_max_span)) if objective.get("lm") == "plm" else None
        self.documents = cfg.data.get("pack_attention", "cross") == "document"  # emit document_ids, position_ids

    def __len__(self) -> int:
        return len(self.examples)

    def _locate(self, index: int) -> tuple[int, int]:
        """(duplicate, example index within its duplicate) of item `index`."""
        duplicate = int(self.duplicate_starts.searchsorted(index, "right")) - 1
        return duplicate, index - int(self.duplicate_starts[duplicate])

    def _mask(self, encoded: dict[str, np.ndarray], duplicate: int, example_index: int) -> dict[str, np.ndarray]:
        rng = (static_rng(self.seed, duplicate, example_index) if self.static
               else dynamic_rng(self.seed, self.epoch, example_index))
        if self.plm is not None:
            return permutation_example(encoded["input_ids"], encoded["special"], *self.plm, rng)
        return mask_example(encoded["input_ids"], encoded["special"], encoded["word_starts"], self.masking,
                            self.vocab_size, rng)

    def draw_mask(self, index: int) -> dict[str, np.ndarray]:
        """Item `index`'s mask drawn from its seeded generator (what static masks store)."""
        item = self._mask(encode_example(self.corpus, self.examples[index], self.max_seq_length), *self._locate(index))
        if self.plm is not None:  # PLM items are redrawn from their static generator when served; store the targets
            item = {"input_ids": item["input_ids"],
                    "mlm_labels": np.where(item["plm_order"] > 0, item["input_ids"], IGNORE)}
        return item

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        duplicate, example_index = self._locate(index)
        example = self.examples[index]
        encoded = encode_example(self.corpus, example, self.max_seq_length)
        if self.stored is not None and self.plm is None:
            item = self.stored.apply(index, encoded["input_ids"])
        else:
            item = self._mask(encoded, duplicate, example_index)
        item["token_type_ids"] = encoded["token_type_ids"]
        item["attention_mask"] = np.ones(len(encoded["input_ids"]), dtype=np.int64)
        if self.documents:
            item.update(document_layout(encoded["special"]))
        if example["label"] >= 0:
            item["sentence_label"] = np.int64(example["label"])
        return item


class PretrainDataModule(pl.LightningDataModule):
    def __init__(self, cfg: DictConfig, tokenizer: Any = None):
        super().__init__()
        self.cfg = cfg
        self.tokenizer = tokenizer  # given (e.g. a checkpoint's), else loaded or trained in prepare()
        self.corpus: Optional[TokenizedCorpus] = None
        self.train_set: Optional[PretrainDataset] = None
        self.val_set: Optional[PretrainDataset] = None
        self.canonical_set: Optional[CanonicalSet] = None
        self._resume_position: dict[str, int] = {}  # where a resumed epoch continues (from the checkpoint)
        self._stream_loader: Any = None  # data.backend=hf_streaming's training loader

    def prepare(self) -> None:
        """Identify, split and tokenize the corpus, streaming it: no list of documents is ever held.
        Cached by the corpus' identity (file stats and sampled bytes), so a second run reads no text."""
        data = self.cfg.data
        cache_dir = Path(data.cache_dir).expanduser()
        streaming = data.backend == "hf_streaming"
        # hf_streaming: training documents stream (data/streaming.py); the cache holds the held-out files only
        source = file_source(list(data.valid_path), data.format, data.text_field) if streaming else document_source(data)
        key = source.key
        num_documents = document_count(source, key, cache_dir)  # the split needs it before the tokenizer
        if streaming:
            self.train_ids, self.valid_ids = np.arange(0), np.arange(num_documents)
        else:
            self.train_ids, self.valid_ids = split_documents(num_documents, data.valid_fraction)
        tok = self.cfg.tokenizer
        if self.tokenizer is None and tok.path:
            self.tokenizer = load_tokenizer(tok.path)
        elif self.tokenizer is None and streaming:
            from lightning_bert.data.streaming import streaming_tokenizer

            self.tokenizer = streaming_tokenizer(self.cfg)  # trained on the head of the training stream
        elif self.tokenizer is None:
            train_docs = _skip_block(source, int(self.valid_ids[0]), int(self.valid_ids[-1]) + 1)
            self.tokenizer = tokenizer_for(train_docs, f"{key}-{data.valid_fraction}", tok.kind, tok.vocab_size,
                                           tok.lowercase, tok.min_frequency, cache_dir, length=len(self.train_ids))
        self.corpus = tokenized_corpus(source, key, self.tokenizer, cache_dir, total=num_documents)
        if self.corpus.num_documents != num_documents:
            raise UserError(f"the corpus changed while it was read ({num_documents} then {self.corpus.num_documents} "
                            f"documents); clear {cache_dir} or keep the files still during preparation")
        self.data_key = hashlib.sha256(f"{key}{self.tokenizer.to_str()}".encode()).hexdigest()[:16]
        log.info("corpus: %d documents (%d held out), %d tokens", num_documents, len(self.valid_ids),
                 self.corpus.num_tokens)

    def use_tokenizer(self, tokenizer_json: str) -> None:
        """Take this tokenizer (e.g. global rank 0's) instead of loading or training one."""
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_str(tokenizer_json)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def setup(self, stage: Optional[str] = None) -> None:
        if self.corpus is None:
            self.prepare()
        if self.val_set is not None:
            return
        data, seed = self.cfg.data, self.cfg.run.seed
        static = self.cfg.masking.mode == "static"

        def examples(doc_ids: np.ndarray, salt: int, duplicate: int = 0) -> np.ndarray:
            rng = np.random.default_rng([seed, salt] + ([duplicate] if duplicate else []))
            return build_examples(self.corpus, self.cfg.objective.sentence, data.max_seq_length, rng,
                                  short_seq_prob=data.short_seq_prob, cross_doc=data.cross_doc, doc_ids=doc_ids,
                                  shift=duplicate > 0)

        if data.backend == "hf_streaming":  # training examples come from the stream, built per batch
            self._setup_eval()
            return
        # Static masking: every duplicate draws its own pairs (and packing offset), as BERT's builder did.
        per_duplicate = [examples(self.train_ids, 0, d) for d in range(self.cfg.masking.dupe_factor if static else 1)]
        starts = np.cumsum([0] + [len(e) for e in per_duplicate[:-1]])
        self.train_set = PretrainDataset(self.corpus, np.concatenate(per_duplicate), self.cfg, self.vocab_size,
                                         static, duplicate_starts=starts)
        if static and self.cfg.objective.get("lm", "mlm") == "mlm":  # PLM redraws its static orders from the seed
            self.train_set.stored = stored_masks(self.train_set.draw_mask, len(self.train_set),
                                                 self._static_key(self.train_set), Path(data.cache_dir).expanduser())
        self._setup_eval()
        log.info("examples: %d train, %d valid, %d canonical eval", len(self.train_set), len(self.val_set),
                 len(self.canonical_set))

    def _setup_eval(self) -> None:
        """The run's own validation set (its sentence task and masking) and the canonical one."""
        data, seed = self.cfg.data, self.cfg.run.seed
        # Validation masks are always static, so every evaluation scores the same predictions.
        examples = build_examples(self.corpus, self.cfg.objective.sentence, data.max_seq_length,
                                  np.random.default_rng([seed, 1]), short_seq_prob=data.short_seq_prob,
                                  cross_doc=data.cross_doc, doc_ids=self.valid_ids)
        self.val_set = PretrainDataset(self.corpus, examples, self.cfg, self.vocab_size, True)
        self.canonical_set = CanonicalSet(self.corpus, canonical_examples(self.corpus, self.valid_ids, data.max_seq_length),
                                          data.max_seq_length, self.vocab_size, token_characters(self.tokenizer))

    def _static_key(self, dataset: PretrainDataset) -> str:
        """Everything the stored masks depend on: tokens, examples, masking settings, seed."""
        digest = hashlib.sha256(self.data_key.encode())
        digest.update(np.ascontiguousarray(dataset.examples).tobytes())
        digest.update(json.dumps([OmegaConf.to_container(self.cfg.masking), self.cfg.run.seed, self.vocab_size,
                                  self.cfg.data.max_seq_length]).encode())
        return digest.hexdigest()[:16]

    def set_epoch(self, epoch: int) -> None:
        if self.train_set is not None:
            self.train_set.epoch = epoch
        if self._stream_loader is not None:  # dynamic masks of the streamed rows are f(seed, epoch, row)
            self._stream_loader.collate_fn.epoch = epoch

    def _loader(self, dataset: Dataset, shuffle: bool, batch_size: int) -> DataLoader:
        # One seeded permutation per epoch, dealt out rank by rank: the global batch at each step is the
        # same for 1 or N processes (Lightning keeps a sampler it is given: use_distributed_sampler=False).
        sampler = ResumableSampler(dataset, num_replicas=self._world()[0], rank=self._world()[1], shuffle=shuffle,
                                   seed=self.cfg.run.seed, drop_last=shuffle)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate_pretraining,
                          num_workers=self.cfg.data.num_workers, drop_last=shuffle)

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def train_dataloader(self) -> DataLoader:
        """One loader batch = one optimizer step on this rank: accumulate_grad_batches micro-batches of
        batch_size, split by PretrainModule, which normalises the loss over all of them."""
        t = self.cfg.trainer
        if self.cfg.data.backend == "hf_streaming":  # resumable: Lightning saves the loader's own state_dict
            from lightning_bert.data.streaming import streaming_train_loader

            self._stream_loader = streaming_train_loader(self.cfg, self.tokenizer, *self._world(),
                                                         batch_size=t.batch_size * t.accumulate_grad_batches)
            return self._stream_loader
        loader = self._loader(self.train_set, shuffle=True, batch_size=t.batch_size * t.accumulate_grad_batches)
        position = self._resume_position
        if position and self.trainer is not None and position["epoch"] == self.trainer.current_epoch:
            loader.sampler.skip = position["batches"] * loader.batch_size  # continue the epoch where it stopped
        self._resume_position = {}
        return loader

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False, batch_size=self.cfg.trainer.batch_size)

    def canonical_loader(self) -> DataLoader:
        """This rank's share of the canonical evaluation set (every item exactly once over all ranks:
        no sampler padding, which would count some twice), in fixed batches (see data/canonical.py)."""
        world, rank = self._world()
        return DataLoader(self.canonical_set, batch_size=EVAL_BATCH_SIZE, collate_fn=collate_pretraining,
                          sampler=list(range(rank, len(self.canonical_set), world)))

    def cache_record(self) -> dict[str, Any]:
        """The token cache this run trains on (sizes, digests, documents): a resumed run must find the same."""
        return cache_record(self.corpus.path) if self.corpus is not None and self.corpus.path else {}

    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint: the epoch and the batches of it already trained, so a resumed run
        continues with the next batch of the same permutation instead of restarting the epoch; and the
        record of the token cache, which pins the data a resumed run may continue on."""
        trainer = self.trainer
        if trainer is None:
            return {}
        return {"epoch": trainer.current_epoch,
                "batches": trainer.fit_loop.epoch_loop.batch_progress.current.processed,
                "cache": self.cache_record()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume_position = {k: state[k] for k in ("epoch", "batches") if k in state}


class ResumableSampler(DistributedSampler):
    """DistributedSampler that can start its next epoch `skip` items in (a resumed mid-epoch run).
    Its length stays the full epoch's, which is what Lightning counts a resumed epoch against."""

    skip = 0

    def __iter__(self) -> Any:
        indices = list(super().__iter__())
        skip, self.skip = self.skip, 0
        return iter(indices[skip:])
