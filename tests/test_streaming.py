"""data.backend=hf_streaming: Hugging Face datasets streaming, sharded over 2 ranks, resumable mid-epoch.

A local directory of parquet shards written from real Wikipedia text stands in for the bucket.
"""
import gc
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import SHARED_DATA, TINY, free_port

from lightning_bert.config import ConfigError, load
from lightning_bert.data.corpus import read_documents
from lightning_bert.data.masking import IGNORE
from lightning_bert.data.tokenizer import CLS_ID, SEP_ID, train_tokenizer

pytest.importorskip("datasets", reason="optional: pip install datasets")
pytest.importorskip("torchdata", reason="optional: pip install torchdata")

SHARDS = 4


@pytest.fixture(scope="module")
def bucket(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """4 parquet shards of 120 real documents, and a tokenizer trained on them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("bucket")
    docs = read_documents([str(shared_data / "wikipedia-en" / "valid.txt")])[:120]
    (root / "data").mkdir()
    for shard in range(SHARDS):
        pq.write_table(pa.table({"id": list(range(shard, 120, SHARDS)), "text": docs[shard::SHARDS]}),
                       root / "data" / f"train-{shard:05d}.parquet")
    train_tokenizer("wordpiece", docs, 1000).save(str(root / "tokenizer.json"))
    return root


VALID = SHARED_DATA / "wikitext-2-raw" / "wiki.valid.raw"  # held-out files: the stream has no held-out block


def _overrides(bucket: Path, tmp: Path) -> list[str]:
    return TINY + ["data.backend=hf_streaming", f"data.hf_dataset={bucket / 'data'}", "trainer.batch_size=4",
                   f"data.valid_path={VALID}",
                   f"tokenizer.path={bucket / 'tokenizer.json'}", f"data.cache_dir={tmp / 'cache'}"]


def _batches(loader, n: int) -> list[dict]:
    it = iter(loader)
    return [{k: v.tolist() for k, v in next(it).items()} for _ in range(n)]


def _rank(rank: int, world: int, overrides: list[str], out: str, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from lightning_bert.data.streaming import streaming_tokenizer, streaming_train_loader

    cfg = load(overrides)
    tokenizer = streaming_tokenizer(cfg)
    loader = streaming_train_loader(cfg, tokenizer, dist.get_world_size(), dist.get_rank(), lookahead=0)
    it = iter(loader)
    first = [{k: v.tolist() for k, v in next(it).items()} for _ in range(3)]
    state = loader.state_dict()  # mid-epoch, as a checkpoint stores it
    reference = [{k: v.tolist() for k, v in next(it).items()} for _ in range(3)]
    resumed_loader = streaming_train_loader(load(overrides), tokenizer, world, rank, lookahead=0)
    resumed_loader.load_state_dict(json.loads(json.dumps(state)))  # survives serialisation
    resumed = _batches(resumed_loader, 3)
    rows = [ids for batch in first + reference for ids in batch["input_ids"]]
    gathered: list = [None] * world
    dist.all_gather_object(gathered, rows)
    if rank == 0:
        Path(out).write_text(json.dumps({"ranks": gathered}))
    Path(f"{out}.{rank}").write_text(json.dumps({"reference": reference, "resumed": resumed, "first": first}))
    dist.destroy_process_group()
    del it, loader, resumed_loader
    gc.collect()  # close the parquet readers now, not during interpreter shutdown


def test_two_ranks_read_disjoint_shards_and_resume_mid_epoch(bucket: Path, tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    port = free_port()
    mp.spawn(_rank, args=(2, _overrides(bucket, tmp_path), str(out), port), nprocs=2, join=True)
    ranks = json.loads(out.read_text())["ranks"]
    as_tuples = [{tuple(row) for row in rows} for rows in ranks]
    assert all(len(rows) == 6 * 4 for rows in ranks)
    assert not as_tuples[0] & as_tuples[1]  # each rank its own shards: no example read twice
    for rank in range(2):
        result = json.loads(Path(f"{out}.{rank}").read_text())
        assert result["resumed"] == result["reference"]  # same rows, same masks after the resume
        assert result["first"] != result["reference"]
        for batch in result["first"]:
            ids, labels = np.array(batch["input_ids"]), np.array(batch["mlm_labels"])
            assert ids.shape[0] == 4 and ids.shape[1] <= 64 and (ids[:, 0] == CLS_ID).all()
            assert ((labels != IGNORE) & (ids != 4)).sum() < (labels != IGNORE).sum()  # mostly [MASK]
            assert 0.08 < (labels != IGNORE).sum() / (np.array(batch["attention_mask"]) == 1).sum() < 0.2


def test_lightning_checkpoints_the_stream_position(bucket: Path, tmp_path: Path) -> None:
    """Lightning saves the loader's state in the checkpoint (its fetcher runs one batch ahead: the
    loader reports the state before that batch), so stop-and-resume sees the uninterrupted batches."""
    import lightning.pytorch as pl
    from tokenizers import Tokenizer

    from lightning_bert.data.streaming import streaming_train_loader

    cfg = load(_overrides(bucket, tmp_path))
    tokenizer = Tokenizer.from_file(str(bucket / "tokenizer.json"))

    class Recorder(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.seen: list = []

        def training_step(self, batch: dict, index: int) -> torch.Tensor:
            self.seen.append(batch["input_ids"].tolist())
            return self.w.sum()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def train_dataloader(self):
            return streaming_train_loader(cfg, tokenizer)

    def fit(steps: int, ckpt=None, save=None) -> list:
        module = Recorder()
        trainer = pl.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, accelerator="cpu")
        trainer.fit(module, ckpt_path=ckpt)
        if save:
            trainer.save_checkpoint(save, weights_only=False)
        return module.seen

    uninterrupted = fit(6)
    first = fit(3, save=tmp_path / "mid.ckpt")
    assert first + fit(6, ckpt=tmp_path / "mid.ckpt") == uninterrupted


def test_our_file_formats_stream_and_pack_real_text(shared_data: Path, tmp_path: Path, bucket: Path) -> None:
    from lightning_bert.data.streaming import document_stream, streaming_dataset

    path = shared_data / "wikipedia-en" / "valid.txt"  # WikiExtractor: read by our reader, streamed
    cfg = load(TINY + ["data.backend=hf_streaming", f"data.path={path}", f"tokenizer.path={bucket / 'tokenizer.json'}",
                       f"data.valid_path={VALID}"])
    docs = [row["text"] for row in document_stream(cfg.data).take(5)]
    assert docs == read_documents([str(path)])[:5]
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(bucket / "tokenizer.json"))
    rows = [row["input_ids"] for row in streaming_dataset(cfg, tokenizer).take(20)]
    assert all(len(r) <= 64 and r[0] == CLS_ID and r[-1] == SEP_ID for r in rows)
    assert sum(len(r) for r in rows) > 20 * 40  # packed: rows are mostly full
    # Packing drops nothing: the rows hold the tokenizer's ids of every sentence in order, then a [SEP]
    # where the next document begins.
    from lightning_bert.data.sentences import split_sentences

    reference = [t for sentence in split_sentences(docs[0])
                 for t in tokenizer.encode(sentence, add_special_tokens=False).ids]
    stream: list[int] = []
    for row in streaming_dataset(cfg, tokenizer):
        stream += row["input_ids"][1:-1]
        if len(stream) > len(reference):
            break
    assert stream[:len(reference)] == reference and stream[len(reference)] == SEP_ID


def test_streaming_refuses_what_it_cannot_serve() -> None:
    for extra in ("objective.sentence=nsp", "masking.mode=static"):
        with pytest.raises(ConfigError, match="hf_streaming"):
            load(["data.backend=hf_streaming", f"data.valid_path={VALID}", extra])
    with pytest.raises(ConfigError, match="backend"):
        load(["data.backend=s3"])
