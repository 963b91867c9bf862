"""Batches from the datamodule: stored static masks, dynamic masks per epoch, the batch contract."""
from pathlib import Path

import numpy as np
import pytest
import torch

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
    starts = first.train_set.duplicate_starts
    assert len(starts) == 3 and len(first.train_set) == len(first.train_set.examples)
    assert len(list((tmp_path / "cache").glob("masks-*/offsets.npy"))) == 1
    second = _data(overrides)  # a restart, or another DDP rank: reads the same files
    assert isinstance(second.train_set.stored.positions, np.memmap)
    n = int(starts[1])
    for index in (0, 1, n, int(starts[2]) + 1):  # across duplicates
        stored, again = first.train_set[index], second.train_set[index]
        drawn = first.train_set.draw_mask(index)
        for key in drawn:
            assert np.array_equal(stored[key], drawn[key]) and np.array_equal(again[key], drawn[key]), key
    for epoch in (0, 1):  # epochs change nothing for static masks
        first.set_epoch(epoch)
        assert np.array_equal(first.train_set[0]["mlm_labels"], second.train_set[0]["mlm_labels"])
    # each duplicate packs the same tokens anew (BERT's builder drew every duplicate afresh)
    dup0, dup1 = first.train_set.examples[:n], first.train_set.examples[n:int(starts[2])]
    assert not np.array_equal(dup0["a_end"], dup1["a_end"][:n])
    assert dup0["a_start"][0] == dup1["a_start"][0]


@pytest.mark.parametrize("sentence", ["nsp", "sop"])
def test_static_duplicates_draw_their_own_pairs(tiny_overrides: list[str], sentence: str) -> None:
    data = _data(tiny_overrides + ["masking.mode=static", "masking.dupe_factor=2", f"objective.sentence={sentence}"])
    n = int(data.train_set.duplicate_starts[1])
    dup0, dup1 = data.train_set.examples[:n], data.train_set.examples[n:]
    assert len(dup0) != len(dup1) or not np.array_equal(dup0, dup1)
    assert 0.4 < dup1["label"].mean() < 0.6


def test_canonical_eval_inputs_do_not_depend_on_the_variant(tiny_overrides: list[str]) -> None:
    """The fair yardstick: same ids, masks and labels whatever the sentence task, masking unit/mode or seed."""
    base = _data(tiny_overrides)
    other = _data(tiny_overrides + ["objective.sentence=sop", "masking.unit=span", "masking.mode=static",
                                    "masking.dupe_factor=2", "run.seed=7", "trainer.batch_size=5"])
    batches = list(zip(base.canonical_loader(), other.canonical_loader()))
    assert len(batches) >= 2
    for a, b in batches:
        assert a.keys() == b.keys() >= {"input_ids", "mlm_labels", "attention_mask", "mlm_chars"}
        for key in a:
            assert torch.equal(a[key], b[key]), key
    labels = torch.cat([a["mlm_labels"].flatten() for a, _ in batches])
    ids = torch.cat([a["input_ids"].flatten() for a, _ in batches])
    real = ids != 0
    share = ((labels != IGNORE).sum() / (real & (ids != 2) & (ids != 3)).sum()).item()
    assert 0.13 < share < 0.17  # token-level 15%, whatever masking.rate/unit the run uses
    # the run's own validation set does differ between the two (it is built with the run's settings)
    assert not np.array_equal(base.val_set.examples, other.val_set.examples)


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
