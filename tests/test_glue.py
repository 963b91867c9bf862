"""GLUE registry and readers against the real TSV files; metrics against their textbook definitions."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from lightning_bert.errors import UserError
from lightning_bert.eval.glue import TASKS, collate_encoded, encode, get_task, make_metrics, parse_downstream, read_task
from conftest import GLUE_DIR


COUNTS = {"cola": (8551, 1043), "sst2": (67349, 872), "mrpc": (3668, 408), "rte": (2490, 277),
          "stsb": (5749, 1500), "wnli": (635, 71)}


def test_registry_covers_the_six_tasks_and_matches_the_config() -> None:
    from lightning_bert.config import DOWNSTREAM  # eval.downstream is checked at config time, without torch

    assert set(TASKS) == set(COUNTS)
    assert list(DOWNSTREAM) == [*TASKS, "sts"]


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_reader_counts_and_labels(name: str) -> None:
    spec = TASKS[name]
    for split, expected in zip(("train", "dev"), COUNTS[name]):
        examples = read_task(name, split, GLUE_DIR)
        assert len(examples) == expected
        pair = len(spec.text_columns) == 2
        assert all(a and (b is not None) == pair for a, b, _ in examples)
        labels = {y for *_, y in examples}
        if spec.is_regression:
            assert all(isinstance(y, float) for y in labels) and min(labels) == 0.0 and max(labels) == 5.0
        else:
            assert labels == set(range(spec.num_labels))


def test_reader_keeps_quotes_and_drops_bom() -> None:
    mrpc = read_task("mrpc", "train", GLUE_DIR)
    assert mrpc[0][0].startswith("Amrozi accused his brother") and '" the witness "' in mrpc[0][0]
    assert sum(y for *_, y in mrpc) == 2474  # label column parsed for every row: BOM header skipped
    cola = read_task("cola", "train", GLUE_DIR)  # no header: the first row is an example
    assert cola[0] == ("Our friends won't buy this analysis, let alone the next one we propose.", None, 1)
    rte = read_task("rte", "dev", GLUE_DIR)
    assert sum(y == 0 for *_, y in rte) == 146  # entailment = 0, as in nyu-mll/glue


def test_reader_splits_rows_only_on_newlines(tmp_path: Path) -> None:
    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "dev.tsv").write_text('sentence\tlabel\n"odd\u2028quote \t1\r\nplain\t0\n', encoding="utf-8")
    assert read_task("sst2", "dev", tmp_path) == [('"odd\u2028quote', None, 1), ("plain", None, 0)]
    (tmp_path / "SST-2" / "train.tsv").write_text("sentence\tlabel\nno label here\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"train.tsv:2: not a SST-2 row \(1 tab-separated fields\)"):
        read_task("sst2", "train", tmp_path)


def test_unknown_task_and_missing_dir_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown GLUE task 'qnli'; choose from cola, sst2"):
        get_task("qnli")
    with pytest.raises(UserError) as err:
        read_task("sst2", "train", tmp_path)
    assert "GLUE file not found" in str(err.value) and "\n" not in str(err.value)


def test_parse_downstream() -> None:
    assert parse_downstream(["glue:sst2", "mrpc", "sts", "sst2"]) == (["sst2", "mrpc"], True)
    assert parse_downstream([]) == ([], False)
    with pytest.raises(UserError, match="unknown downstream task 'mnli'"):
        parse_downstream(["mnli"])


def _mcc(p: np.ndarray, y: np.ndarray) -> float:
    tp, tn = np.sum((p == 1) & (y == 1)), np.sum((p == 0) & (y == 0))
    fp, fn = np.sum((p == 1) & (y == 0)), np.sum((p == 0) & (y == 1))
    return (tp * tn - fp * fn) / np.sqrt(float((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))


def _ranks(x: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(x)).astype(float)  # no ties in the hand-made data


def test_metrics_equal_their_definitions() -> None:
    y = np.array([1, 1, 1, 0, 0, 1, 0, 1, 1, 0])
    p = np.array([1, 0, 1, 0, 1, 1, 0, 1, 0, 0])
    tp, fp, fn = np.sum((p == 1) & (y == 1)), np.sum((p == 1) & (y == 0)), np.sum((p == 0) & (y == 1))
    expected = {"acc": np.mean(p == y), "f1": 2 * tp / (2 * tp + fp + fn), "mcc": _mcc(p, y)}
    for name in ("cola", "sst2", "mrpc", "rte", "wnli"):
        metrics = make_metrics(TASKS[name])
        metrics.update(torch.tensor(p), torch.tensor(y))
        for key, value in metrics.compute().items():
            assert float(value) == pytest.approx(expected[key], abs=1e-6), (name, key)
    gold = np.array([0.0, 1.2, 2.5, 3.1, 4.8, 5.0, 0.4])
    pred = np.array([0.3, 0.9, 3.0, 2.7, 4.1, 4.9, 1.0])
    metrics = make_metrics(TASKS["stsb"])
    metrics.update(torch.tensor(pred, dtype=torch.float), torch.tensor(gold, dtype=torch.float))
    out = {k: float(v) for k, v in metrics.compute().items()}
    assert out["pearson"] == pytest.approx(np.corrcoef(pred, gold)[0, 1], abs=1e-5)
    assert out["spearman"] == pytest.approx(np.corrcoef(_ranks(pred), _ranks(gold))[0, 1], abs=1e-5)


def test_metrics_never_sync_across_ranks() -> None:
    # Fine-tuning runs on rank 0 of a finished DDP run: a gather would wait forever for the other ranks.
    for spec in TASKS.values():
        assert all(not m.sync_on_compute for m in make_metrics(spec).values())


def _word_tokenizer() -> Tokenizer:
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok


def test_encode_truncates_the_longer_side_and_sets_segments() -> None:
    tok = _word_tokenizer()
    (ids, seg), = encode(tok, [("a " * 10, "b " * 3, 0)], max_length=10)
    assert ids == [2, 5, 5, 5, 5, 3, 6, 6, 6, 3]  # a trimmed to 4 so that 4 + 3 + 3 specials = 10
    assert seg == [0] * 6 + [1] * 4
    (ids, seg), = encode(tok, [("a " * 20, "b " * 20, 0)], max_length=11)
    assert ids.count(5) == 4 and ids.count(6) == 4 and len(ids) == 11
    (ids, seg), = encode(tok, [("a b", None, 1)], max_length=8)
    assert ids == [2, 5, 6, 3] and seg == [0, 0, 0, 0]


def test_encode_matches_a_transformers_fast_tokenizer() -> None:
    # Reference: transformers' fast tokenizer over the same vocabulary with BERT's template; longest_first trims
    # the longer side first (A on a tie), and its budget counts the three specials.
    transformers = pytest.importorskip("transformers")
    from tokenizers import processors

    ref = _word_tokenizer()
    ref.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    ref = transformers.PreTrainedTokenizerFast(tokenizer_object=ref)
    for len_a, len_b, max_length in [(20, 20, 10), (20, 20, 11), (5, 4, 10), (4, 5, 10), (6, 6, 12), (9, 1, 8),
                                     (1, 9, 8), (3, 2, 16), (12, None, 8)]:
        a, b = "a " * len_a, "b " * len_b if len_b else None
        (ids, segments), = encode(_word_tokenizer(), [(a, b, 0)], max_length=max_length)
        want = ref(a, b, truncation="longest_first", max_length=max_length, return_token_type_ids=True)
        assert (ids, segments) == (want["input_ids"], want["token_type_ids"]), (len_a, len_b, max_length)


def test_collate_pads_to_the_longest() -> None:
    batch = collate_encoded([([2, 5, 3], [0, 0, 0]), ([2, 5, 3, 6, 3], [0, 0, 0, 1, 1])], [0.5, 2.0])
    assert batch["input_ids"].tolist() == [[2, 5, 3, 0, 0], [2, 5, 3, 6, 3]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1] * 5]
    assert batch["token_type_ids"].tolist() == [[0, 0, 0, 0, 0], [0, 0, 0, 1, 1]]
    assert batch["labels"].dtype == torch.float
    assert collate_encoded([([2, 3], [0, 0])], [1])["labels"].dtype == torch.long
