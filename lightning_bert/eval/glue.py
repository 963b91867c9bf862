"""GLUE tasks: one registry entry per task, readers (TSV directory or Hugging Face), pair encoding.

Readers return lists of `(text_a, text_b | None, label)` with labels as in Hugging Face `nyu-mll/glue`
(RTE: 0 = entailment), so both sources give the same examples and the same label ids.
"""
from __future__ import annotations

import math

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch
from tokenizers import Tokenizer
from torch import Tensor

from lightning_bert.data.tokenizer import CLS_ID, PAD_ID, SEP_ID
from lightning_bert.errors import UserError

log = logging.getLogger(__name__)

Label = Union[int, float]
Example = tuple[str, Optional[str], Label]
HF_GLUE = "hf"  # glue_dir value that selects Hugging Face `nyu-mll/glue` instead of TSV files


@dataclass(frozen=True)
class TaskSpec:
    name: str  # short name used in configs and summary keys (glue/<name>/<metric>)
    dir: str  # directory under glue_dir (standard glue_data layout)
    text_columns: tuple[int, ...]  # TSV column(s) of text_a (and text_b)
    label_column: int  # TSV column of the label
    header: bool  # TSV files start with a header row
    num_labels: int  # classes; 1 = regression (STS-B)
    metrics: tuple[str, ...]  # names in METRICS, reported in this order
    hf_columns: tuple[str, ...]  # the same text fields in nyu-mll/glue
    label_map: Optional[tuple[tuple[str, int], ...]] = None  # TSV label string -> id, when not numeric

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1

    def parse_label(self, raw: str) -> Label:
        if self.is_regression:
            return float(raw)
        return dict(self.label_map)[raw] if self.label_map else int(raw)


TASKS: dict[str, TaskSpec] = {t.name: t for t in (
    TaskSpec("cola", "CoLA", (3,), 1, False, 2, ("mcc",), ("sentence",)),
    TaskSpec("sst2", "SST-2", (0,), 1, True, 2, ("acc",), ("sentence",)),
    TaskSpec("mrpc", "MRPC", (3, 4), 0, True, 2, ("f1", "acc"), ("sentence1", "sentence2")),
    TaskSpec("rte", "RTE", (1, 2), 3, True, 2, ("acc",), ("sentence1", "sentence2"),
             (("entailment", 0), ("not_entailment", 1))),
    TaskSpec("stsb", "STS-B", (7, 8), 9, True, 1, ("pearson", "spearman"), ("sentence1", "sentence2")),
    TaskSpec("wnli", "WNLI", (1, 2), 3, True, 2, ("acc",), ("sentence1", "sentence2")),
)}


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise UserError(f"unknown GLUE task '{name}'; choose from {', '.join(TASKS)}")
    return TASKS[name]


def parse_downstream(names: Sequence[str]) -> tuple[list[str], bool]:
    """eval.downstream entries ("sst2" or "glue:sst2", and "sts") -> (GLUE task names, run STS probes?)."""
    tasks = [n.removeprefix("glue:") for n in names if n != "sts"]
    for name in tasks:
        if name not in TASKS:
            raise UserError(f"unknown downstream task '{name}'; choose from {', '.join(TASKS)}, sts")
    return list(dict.fromkeys(tasks)), "sts" in names


def read_task(name: str, split: str, glue_dir: str | Path) -> list[Example]:
    """Examples of `split` ("train" or "dev") from a GLUE TSV directory, or from HF when glue_dir == "hf"."""
    spec = get_task(name)
    if split not in ("train", "dev"):
        raise UserError(f"unknown split '{split}'; choose train or dev")
    if str(glue_dir) == HF_GLUE:
        return _read_hf(spec, split)
    path = Path(glue_dir).expanduser() / spec.dir / f"{split}.tsv"
    if not path.is_file():
        raise UserError(f"GLUE file not found: {path} (set glue_dir to a glue_data directory, or glue_dir=hf)")
    # Fields hold bare `"` characters, so no csv quoting: a plain split on tab; utf-8-sig drops MRPC's BOM.
    # Split on "\n" only: str.splitlines would also break rows at U+2028, U+0085 and similar inside a text.
    lines = path.read_text(encoding="utf-8-sig").split("\n")[1 if spec.header else 0:]
    examples: list[Example] = []
    for lineno, line in enumerate(lines, start=2 if spec.header else 1):
        if not line.strip():
            continue
        fields = line.rstrip("\r").split("\t")
        try:
            texts = [fields[c].strip() for c in spec.text_columns]
            label = spec.parse_label(fields[spec.label_column].strip())
        except (IndexError, KeyError, ValueError):
            raise UserError(f"{path}:{lineno}: not a {spec.dir} row ({len(fields)} tab-separated fields)") from None
        check_label(spec, label, f"{path}:{lineno}")
        examples.append((texts[0], texts[1] if len(texts) > 1 else None, label))
    return examples


def check_label(spec: TaskSpec, label: Label, where: str) -> None:
    """A class id must be one of the task's classes (cross-entropy would fail deep in torch, or on a GPU
    with a device-side assert); a score must be a finite number."""
    if spec.is_regression:
        if not math.isfinite(label):
            raise UserError(f"{where}: score {label} is not a finite number")
    elif not 0 <= label < spec.num_labels:
        raise UserError(f"{where}: label {label} is outside {spec.name}'s classes; it must be in "
                        f"[0, {spec.num_labels - 1}]")


def _read_hf(spec: TaskSpec, split: str) -> list[Example]:
    try:
        import datasets
    except ImportError:
        raise UserError("glue_dir=hf needs the datasets package: pip install datasets") from None
    try:
        ds = datasets.load_dataset("nyu-mll/glue", spec.name, split="validation" if split == "dev" else "train")
    except (OSError, ValueError, ConnectionError) as err:
        raise UserError(f"cannot load nyu-mll/glue {spec.name}: {str(err).strip().splitlines()[0]}") from None
    columns = [ds[c] for c in spec.hf_columns]
    labels = [float(y) if spec.is_regression else int(y) for y in ds["label"]]
    for row, label in enumerate(labels):
        check_label(spec, label, f"nyu-mll/glue {spec.name} {split} row {row}")
    second = columns[1] if len(columns) > 1 else [None] * len(labels)
    return list(zip(columns[0], second, labels))


def metric_factories() -> dict[str, Callable[[int], Any]]:
    """Metric name -> torchmetrics constructor (given num_labels); predictions are class ids or scores.

    sync_on_compute=False: fine-tuning runs in one process, possibly rank 0 of a finished DDP pretraining
    run whose process group is still up; a cross-rank gather there would wait for ranks that never come.
    """
    from torchmetrics.classification import Accuracy, BinaryF1Score, MatthewsCorrCoef
    from torchmetrics.regression import PearsonCorrCoef, SpearmanCorrCoef

    local = {"sync_on_compute": False}
    return {
        "acc": lambda n: Accuracy(task="multiclass", num_classes=n, **local),
        "f1": lambda n: BinaryF1Score(**local),  # positive class 1 (paraphrase), as in GLUE
        "mcc": lambda n: MatthewsCorrCoef(task="multiclass", num_classes=n, **local),
        "pearson": lambda n: PearsonCorrCoef(**local),
        "spearman": lambda n: SpearmanCorrCoef(**local),
    }


def make_metrics(spec: TaskSpec) -> Any:
    """A torchmetrics MetricCollection with the task's metrics, keyed by metric name."""
    from torchmetrics import MetricCollection

    factories = metric_factories()
    with warnings.catch_warnings():  # "Spearman keeps all predictions": a GLUE dev set is small
        warnings.filterwarnings("ignore", ".*will save all targets and predictions.*")
        return MetricCollection({m: factories[m](spec.num_labels) for m in spec.metrics})


def encode(tokenizer: Tokenizer, examples: Sequence[Example], max_length: int) -> list[tuple[list[int], list[int]]]:
    """[CLS] a [SEP] (b [SEP]) ids and segment ids, truncated by tokenizers' longest_first (the longer side
    first), as fast BERT tokenizers do."""
    truncating = Tokenizer.from_str(tokenizer.to_str())  # a copy: the caller's tokenizer keeps its settings
    out: list[tuple[list[int], list[int]]] = [([], [])] * len(examples)
    for specials, rows in ((2, [i for i, e in enumerate(examples) if e[1] is None]),
                           (3, [i for i, e in enumerate(examples) if e[1] is not None])):
        if not rows:
            continue
        truncating.enable_truncation(max_length - specials, strategy="longest_first")
        texts = [examples[i][0] if specials == 2 else (examples[i][0], examples[i][1]) for i in rows]
        for i, enc in zip(rows, truncating.encode_batch(texts, add_special_tokens=False)):
            a = [t for t, s in zip(enc.ids, enc.type_ids) if s == 0]
            b = [t for t, s in zip(enc.ids, enc.type_ids) if s == 1]
            ids = [CLS_ID, *a, SEP_ID] + ([*b, SEP_ID] if specials == 3 else [])
            out[i] = (ids, [0] * (len(a) + 2) + [1] * (len(ids) - len(a) - 2))
    return out


def collate_encoded(features: Sequence[tuple[list[int], list[int]]], labels: Optional[Sequence[Label]] = None) -> dict[str, Tensor]:
    """Pad to the longest sequence in the batch (not max_length): short GLUE batches run much faster."""
    length = max(len(ids) for ids, _ in features)
    batch = {k: torch.full((len(features), length), PAD_ID, dtype=torch.long)
             for k in ("input_ids", "token_type_ids", "attention_mask")}
    for row, (ids, segments) in enumerate(features):
        batch["input_ids"][row, :len(ids)] = torch.tensor(ids)
        batch["token_type_ids"][row, :len(ids)] = torch.tensor(segments)
        batch["attention_mask"][row, :len(ids)] = 1
    if labels is not None:
        batch["labels"] = torch.tensor(labels, dtype=torch.float if isinstance(labels[0], float) else torch.long)
    return batch
