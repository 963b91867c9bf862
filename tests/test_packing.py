"""Document-masked packing (data.pack_attention=document) and the training masking rate, on a real slice."""
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_bert.config import load
from lightning_bert.data.batch import collate_pretraining
from lightning_bert.data.datamodule import PretrainDataModule
from lightning_bert.data.examples import _boundaries
from lightning_bert.data.masking import IGNORE
from lightning_bert.data.tokenizer import CLS_ID, MASK_ID, NUM_SPECIAL, SEP_ID, UNK_ID
from lightning_bert.errors import UserError

DOCUMENT = ["data.pack_attention=document"]


def _data(overrides: list[str]) -> PretrainDataModule:
    data = PretrainDataModule(load(overrides))
    data.setup()
    return data


def _check_layout(ids: torch.Tensor, documents: torch.Tensor, positions: torch.Tensor) -> int:
    """One padded row: ids restart after each [SEP] (the [SEP] belongs to the document it closes), padding
    is -1, positions count from 0 within each document. Returns the row's number of documents."""
    real = documents >= 0
    n = int(real.sum())
    assert not real[n:].any() and (ids[n:] == 0).all() and ids[0] == CLS_ID and ids[n - 1] == SEP_ID
    expected_doc, expected_pos = 0, 0
    for i in range(n):
        assert documents[i] == expected_doc and positions[i] == expected_pos, i
        expected_pos += 1
        if ids[i] == SEP_ID:
            expected_doc, expected_pos = expected_doc + 1, 0
    return expected_doc


@pytest.fixture(scope="module")
def pair(tiny_overrides_module: list[str]) -> tuple[PretrainDataModule, PretrainDataModule]:
    return _data(tiny_overrides_module), _data(tiny_overrides_module + DOCUMENT)


@pytest.fixture(scope="module")
def tiny_overrides_module(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> list[str]:
    from conftest import TINY

    tmp = tmp_path_factory.mktemp("packing")
    return TINY + [f"data.path={shared_data / 'wikipedia-en' / 'valid.txt'}", "data.max_documents=60",
                   f"data.cache_dir={tmp / 'cache'}", f"run.output_dir={tmp / 'runs'}"]


def test_document_ids_and_positions_restart_at_each_packed_document(pair) -> None:
    cross, document = pair
    batch = collate_pretraining([document.train_set[i] for i in range(len(document.train_set))])
    assert "document_ids" not in collate_pretraining([cross.train_set[0]])  # cross: today's batch keys only
    corpus, crossed = document.corpus, 0
    for row, example in enumerate(document.train_set.examples):
        count = _check_layout(batch["input_ids"][row], batch["document_ids"][row], batch["position_ids"][row])
        # one document per corpus document the example's token range touches
        assert count == 1 + len(_boundaries(corpus, int(example["a_start"]), int(example["a_end"])))
        crossed += count > 1
    assert crossed >= 10  # FULL-SENTENCES packing crosses documents often on this slice
    short = batch["document_ids"][:, -1] == -1  # a row shorter than the longest is padded with -1
    assert short.any() and (batch["position_ids"][short, -1] == 0).all()
    # the run's own validation set is packed the same way and carries the keys too
    assert "document_ids" in collate_pretraining([document.val_set[0]])


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_masks_are_the_same_with_and_without_document_masking(tiny_overrides: list[str], mode: str) -> None:
    extra = [f"masking.mode={mode}", "masking.dupe_factor=2"]
    cross, document = _data(tiny_overrides + extra), _data(tiny_overrides + extra + DOCUMENT)
    assert len(cross.train_set) == len(document.train_set)
    for index in (0, 1, len(cross.train_set) - 1):
        a, b = cross.train_set[index], document.train_set[index]
        assert set(b) - set(a) == {"document_ids", "position_ids"}
        for key in a:
            assert np.array_equal(a[key], b[key]), key


def test_canonical_set_ignores_pack_attention_and_the_training_rate(pair, tiny_overrides_module: list[str]) -> None:
    """ModernBERT trains at 30% and evaluates at 15%: the canonical set must not move with the training masking."""
    base = pair[0]
    others = [pair[1], _data(tiny_overrides_module + ["masking.rate=0.4", "masking.mask_prob=1.0"]),
              _data(tiny_overrides_module + ["masking.rate=0.3", "masking.mask_prob=0.5", "masking.random_prob=0.5"])]
    for other in others:
        assert other.train_set.masking.rate != 0.15 or other is pair[1]
        for a, b in zip(base.canonical_loader(), other.canonical_loader()):
            assert a.keys() == b.keys() and "document_ids" not in a
            for key in a:
                assert torch.equal(a[key], b[key]), key
    labels = torch.cat([b["mlm_labels"].flatten() for b in base.canonical_loader()])
    ids = torch.cat([b["input_ids"].flatten() for b in base.canonical_loader()])
    selected = labels != IGNORE
    assert 0.13 < (selected.sum() / ((ids > 0) & (ids != CLS_ID) & (ids != SEP_ID)).sum()).item() < 0.17
    masked = (ids[selected] == MASK_ID).float().mean().item()  # 80% of the predictions
    assert 0.75 < masked < 0.85


def test_training_rate_is_the_runs(pair, tiny_overrides_module: list[str]) -> None:
    high = _data(tiny_overrides_module + ["masking.rate=0.4", "masking.mask_prob=1.0"])
    items = [high.train_set[i] for i in range(40)]
    selected = np.concatenate([i["mlm_labels"] != IGNORE for i in items])
    maskable = np.concatenate([(i["mlm_labels"] != IGNORE) | (i["input_ids"] >= NUM_SPECIAL) | (i["input_ids"] == UNK_ID)
                               for i in items])
    assert 0.36 < selected.sum() / maskable.sum() < 0.44
    assert all((i["input_ids"][i["mlm_labels"] != IGNORE] == MASK_ID).all() for i in items)  # 100-0-0


@pytest.mark.parametrize("mask_prob, expected", [(0.8, 0.1), (1.0, 0.0), (0.5, 0.25)])
def test_random_prob_defaults_to_half_of_what_mask_leaves(mask_prob: float, expected: float) -> None:
    from omegaconf import OmegaConf

    from lightning_bert.data.masking import random_share

    cfg = load([f"masking.mask_prob={mask_prob}"])
    assert cfg.masking.random_prob is None and random_share(OmegaConf.to_object(cfg.masking)) == expected


@pytest.mark.parametrize("override, message", [
    (["masking.rate=0"], "masking.rate"), (["masking.rate=1.0"], "masking.rate"), (["masking.rate=1.5"], "masking.rate"),
    (["objective.sentence=nsp", *DOCUMENT], "data.pack_attention=document needs objective.sentence=none"),
    (["objective.sentence=sop", *DOCUMENT], "data.pack_attention=document needs objective.sentence=none"),
    (["data.pack_attention=diagonal"], "data.pack_attention"),
])
def test_bad_settings_are_refused_in_one_line(override: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message) as err:
        load(override)
    assert "\n" not in str(err.value)


def test_streamed_rows_carry_the_same_layout(pair) -> None:
    """data.backend=hf_streaming: the packer's rows get document ids from their [SEP]s (one per boundary)."""
    from lightning_bert.data.streaming import MaskingCollate, Packer

    document = pair[1]
    texts = ["First document. It has two sentences.", "Second one.", "A third document, longer than the others are."]
    rows = Packer(document.tokenizer, 64, cross_doc=True)({"text": texts})
    rows = [{k: v[i] for k, v in rows.items()} for i in range(len(rows["input_ids"]))]
    batch = MaskingCollate(document.cfg, document.vocab_size)(rows)
    for row in range(len(rows)):
        count = _check_layout(torch.as_tensor(rows[row]["input_ids"] + [0] * 64)[:batch["input_ids"].shape[1]],
                              batch["document_ids"][row], batch["position_ids"][row])
        assert count == 3 if len(rows) == 1 else count >= 1
