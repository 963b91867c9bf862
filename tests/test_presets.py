"""Every preset in experiments/ trains a few steps on CPU at tiny size; preview and probe CLIs work on it."""
import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO
from lightning_bert import preview
from lightning_bert.eval import probes
from lightning_bert.config import experiment_names, load
from lightning_bert.train.pretrain import PretrainModule

EXPECTED = {  # what each preset must switch on (the papers' defining choices)
    "bert": {"tokenizer.kind": "wordpiece", "masking.mode": "static", "objective.sentence": "nsp"},
    "roberta": {"tokenizer.kind": "bpe", "masking.mode": "dynamic", "objective.sentence": "none", "data.cross_doc": True},
    "albert": {"tokenizer.kind": "unigram", "objective.sentence": "sop", "model.share_layers": "all"},
    "spanbert": {"masking.unit": "span", "objective.sbo": True, "objective.sentence": "none"},
    "xlnet": {"objective.lm": "plm", "model.attention": "relative", "objective.plm_k": 6, "objective.sentence": "none"},
    "mlm_relative": {"objective.lm": "mlm", "model.attention": "relative", "model.position_biased_input": False,
                     "objective.sentence": "none"},
    "mlm_absolute": {"objective.lm": "mlm", "model.attention": "absolute", "objective.sentence": "none"},
    "deberta": {"model.attention": "disentangled", "model.position_biased_input": False, "model.position_buckets": 256,
                "model.share_att_key": True, "objective.emd": True, "objective.sentence": "none"},
    "electra": {"objective.lm": "rtd", "model.attention": "absolute", "objective.rtd_sharing": "tied",
                "objective.rtd_weight": 50.0, "objective.rtd_generator_width": 0.25, "objective.sentence": "none"},
    "deberta_v3": {"objective.lm": "rtd", "model.attention": "disentangled", "model.position_buckets": 256,
                   "model.share_att_key": True, "objective.rtd_sharing": "gdes", "objective.rtd_weight": 10.0,
                   "objective.rtd_generator_depth": 0.5, "objective.sentence": "none"},
}


def test_every_preset_is_covered() -> None:
    assert set(experiment_names()) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_sets_its_defining_choices(name: str) -> None:
    cfg = load([f"experiment={name}"])
    for key, value in EXPECTED[name].items():
        group, field = key.split(".")
        assert cfg[group][field] == value, key
    if name == "albert":  # factorised: embeddings narrower than the hidden size
        assert cfg.model.embedding_size < 128


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_trains_on_cpu(name: str, tiny_overrides: list[str], tmp_path: Path, capsys) -> None:
    overrides = [f"experiment={name}", *tiny_overrides, "masking.dupe_factor=2", f"run.name={name}",
                 "data.valid_fraction=0.1",  # 6 held-out documents: enough for the probes' two sides
                 "model.embedding_size=32" if name == "albert" else "model.norm_position=post"]
    proc = subprocess.run([sys.executable, "train.py", *overrides], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "runs" / name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["global_step"] == 4
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    # BERT's init predicts near-uniformly: the first step's LM loss is ln(vocab), whatever the preset
    lm = load([f"experiment={name}"]).objective.get("lm", "mlm")
    lm = "gen_mlm" if lm == "rtd" else lm  # RTD: the generator's MLM starts at ln(vocab)
    with open(run_dir / "metrics.csv", newline="") as fh:
        first = next(float(r[f"train/{lm}_loss"]) for r in csv.DictReader(fh) if r.get(f"train/{lm}_loss"))
    assert abs(first - math.log(ckpt["hyper_parameters"]["vocab_size"])) < 0.5, first
    sentence = EXPECTED[name].get("objective.sentence", "none")
    head_keys = {f"probe/{t}_head_acc{s}" for t in ("nsp", "sop") for s in ("", "_ci95")}
    assert (head_keys <= set(summary["metrics"])) == (sentence != "none")  # own head: extra keys beside the probe
    if name == "albert":  # one block shared by every layer: the same object, so the same weights
        module = PretrainModule.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt", map_location="cpu",
                                                     weights_only=False)
        layers = module.encoder.layers
        assert len(layers) > 1 and all(layer is layers[0] for layer in layers)
    if name == "spanbert":
        assert "train/sbo_loss" in summary["metrics"]

    capsys.readouterr()
    assert preview.main([*overrides, "--n", "2"]) == 0  # in-process: the CLIs are plain functions
    shown = capsys.readouterr().out
    assert shown.count("example ") == 2 and "->" in shown
    if EXPECTED[name]["objective.sentence"] != "none":
        assert "label " in shown and "\n    B: " in shown

    assert probes.main([str(run_dir / "checkpoints" / "last.ckpt"), *overrides[1:], "max_examples=200"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    expected = {"probe/nsp_acc", "probe/sop_acc"} | ({"probe/nsp_head_acc", "probe/sop_head_acc"} if sentence != "none" else set())
    assert {line.split("\t")[0] for line in lines} == expected
    assert all("\t± " in line and "(95% CI, n=" in line for line in lines)  # never a bare number
