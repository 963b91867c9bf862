"""Batches from the datamodule: stored static masks, dynamic masks per epoch, the batch contract."""
from pathlib import Path

import numpy as np
import pytest

from lightning_bert.config import load
from lightning_bert.data.datamodule import PretrainDataModule
from lightning_bert.data.masking import IGNORE


def _data(overrides: list[str]) -> PretrainDataModule:
    data = PretrainDataModule(load(overrides))
    data.setup()
    return data


@pytest.mark.parametrize("unit", ["token", "span"])
def test_static_masks_are_stored_once_and_identical_across_restarts(tiny_overrides: list[str], tmp_path: Path,
                                                                    unit: str) -> None:
    overrides = tiny_overrides + ["masking.mode=static", "masking.dupe_factor=3", f"masking.unit={unit}"]
    first = _data(overrides)
    assert len(first.train_set) == 3 * len(first.train_set.examples)
    assert len(list((tmp_path / "cache").glob("masks-*/offsets.npy"))) == 1
    second = _data(overrides)  # a restart, or another DDP rank: reads the same files
    assert isinstance(second.train_set.stored.positions, np.memmap)
    n = len(first.train_set.examples)
    for index in (0, 1, n, 2 * n + 1):  # across duplicates
        stored, again = first.train_set[index], second.train_set[index]
        drawn = first.train_set.draw_mask(index)
        for key in drawn:
            assert np.array_equal(stored[key], drawn[key]) and np.array_equal(again[key], drawn[key]), key
    for epoch in (0, 1):  # epochs change nothing for static masks
        first.set_epoch(epoch)
        assert np.array_equal(first.train_set[0]["mlm_labels"], second.train_set[0]["mlm_labels"])
    # duplicates are differently masked copies of the same example
    assert not np.array_equal(first.train_set[0]["mlm_labels"], first.train_set[n]["mlm_labels"])


def test_dynamic_masks_change_per_epoch_and_repeat_under_the_seed(tiny_overrides: list[str]) -> None:
    a, b = _data(tiny_overrides), _data(tiny_overrides)
    epoch0 = a.train_set[3]["mlm_labels"]
    a.set_epoch(1)
    assert not np.array_equal(a.train_set[3]["mlm_labels"], epoch0)
    assert np.array_equal(b.train_set[3]["mlm_labels"], epoch0)
    assert not list(Path(a.cfg.data.cache_dir).glob("masks-*"))  # nothing stored for dynamic masking


@pytest.mark.parametrize("sentence", ["none", "nsp"])
def test_batch_contract(tiny_overrides: list[str], sentence: str) -> None:
    batch = next(iter(_data(tiny_overrides + [f"objective.sentence={sentence}"]).train_dataloader()))
    ids, labels, mask = batch["input_ids"], batch["mlm_labels"], batch["attention_mask"]
    assert ids.shape == labels.shape == mask.shape == batch["token_type_ids"].shape and ids.shape[0] == 8
    assert (labels[mask == 0] == IGNORE).all() and (labels != IGNORE).any()
    assert (ids[:, 0] == 2).all()  # [CLS] first
    assert ("sentence_label" in batch) == (sentence == "nsp")


def test_jsonl_text_field_reaches_the_reader(shared_data: Path, tmp_path: Path) -> None:
    import json

    from lightning_bert.data.corpus import read_documents
    from lightning_bert.data.datamodule import load_documents

    docs = read_documents([str(shared_data / "wikipedia-en" / "valid.txt")])[:5]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"body": d, "text": "wrong field"}) + "\n" for d in docs))
    assert load_documents(load([f"data.path={path}", "data.text_field=body"]).data) == docs
