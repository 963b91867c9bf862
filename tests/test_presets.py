"""Every preset in experiments/ trains a few steps on CPU at tiny size; preview and probe CLIs work on it; the
modern presets resume exactly and export where the transformers registry has a layout for them. The
experiments/ladder_*.yaml rungs of sweeps/*modern_ladder.yaml are checked as a cumulative ladder."""
import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from conftest import REPO, SHARED_DATA
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
    "modernbert": {"model.norm_position": "pre", "model.first_attention_norm": False, "model.positions": "rope",
                   "model.rope_theta": 160000.0, "model.local_rope_theta": 10000.0, "model.local_window": 128,
                   "model.global_every": 3, "model.ffn": "geglu", "model.attention_bias": False, "model.mlp_bias": False,
                   "model.norm_bias": False, "model.segment_embeddings": False, "masking.rate": 0.3,
                   "objective.sentence": "none", "data.pack_attention": "document"},
    "neobert": {"model.norm_position": "pre", "model.norm": "rmsnorm", "model.positions": "rope", "model.rope_theta": 10000.0,
                "model.ffn": "swiglu", "model.attention_bias": False, "model.mlp_bias": False,
                "model.segment_embeddings": False, "masking.rate": 0.2, "masking.mask_prob": 1.0,
                "objective.sentence": "none"},
}
MODERN = {  # issue 17's presets at the test's tiny size: SwiGLU's 2/3 must divide, the window fit 64 tokens
    "modernbert": ["model.intermediate_size=192", "model.local_window=32"],
    "neobert": ["model.intermediate_size=192"],
}
# The cumulative ladder of sweeps/modern_ladder.yaml: each rung adds exactly these settings to the one before.
LADDER = {
    "ladder_0_bert": {"model.intermediate_size": 576},  # objective.sentence=none is the default, set explicitly
    "ladder_1_pre_rmsnorm": {"model.norm_position": "pre", "model.norm": "rmsnorm"},
    "ladder_2_rope": {"model.positions": "rope", "model.rope_theta": 160000.0},
    "ladder_3_geglu": {"model.ffn": "geglu", "model.intermediate_size": 384},  # 3 x 384 = 2 x 576: same parameters
    "ladder_4_bias_free": {"model.attention_bias": False, "model.mlp_bias": False, "model.norm_bias": False,
                           "model.head_bias": False, "model.segment_embeddings": False},
    "ladder_5_local_global": {"model.local_window": 64, "model.global_every": 3, "model.local_rope_theta": 10000.0},
    "ladder_6_mask30": {"masking.rate": 0.3},
    "ladder_7_document": {"data.pack_attention": "document"},
}


def test_every_preset_is_covered() -> None:
    names = set(experiment_names())
    assert names - set(LADDER) == set(EXPECTED) and set(LADDER) <= names


def _flat(cfg) -> dict:
    from omegaconf import OmegaConf

    return {f"{group}.{key}": value for group, section in OmegaConf.to_container(cfg).items() if group != "run"
            for key, value in section.items()}


def test_ladder_rungs_are_cumulative() -> None:
    """Rung k = rung k-1 plus exactly its own settings (sweeps/modern_ladder.yaml grids over them)."""
    previous = _flat(load())
    for rung, added in LADDER.items():
        current = _flat(load([f"experiment={rung}"]))
        changed = {k: v for k, v in current.items() if previous[k] != v}
        assert changed == added, rung
        previous = current
    sweep = [yaml.safe_load((REPO / "sweeps" / f"{prefix}modern_ladder.yaml").read_text()) for prefix in ("", "cpu_")]
    assert all(spec["parameters"]["experiment"]["values"] == list(LADDER) for spec in sweep)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_sets_its_defining_choices(name: str) -> None:
    cfg = load([f"experiment={name}"])
    for key, value in EXPECTED[name].items():
        group, field = key.split(".")
        assert cfg[group][field] == value, key
    if name == "albert":  # factorised: embeddings narrower than the hidden size
        assert cfg.model.embedding_size < 128


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(EXPECTED) - set(MODERN)))
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


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODERN))
def test_modern_preset_trains_resumes_exactly_and_exports_where_supported(name: str, tiny_overrides: list[str],
                                                                          tmp_path: Path) -> None:
    from test_export import batch_for, real_sentences
    from test_train import interrupted, train, weights

    from lightning_bert.errors import UserError
    from lightning_bert.hf.export import hf_model_from_checkpoint
    from lightning_bert.train.checkpoint import encoder_config

    overrides = [f"experiment={name}", *tiny_overrides, *MODERN[name], "trainer.max_steps=5",
                 "trainer.checkpoint_every_n_steps=2", "eval.probes=false", "data.max_documents=30"]
    train(overrides + ["run.name=whole"])
    assert interrupted("KILL", 3, overrides + ["run.name=cut"]).returncode == -9  # last checkpoint: step 2
    train(overrides + ["run.name=cut", "run.resume=auto"])
    whole, cut = weights(tmp_path / "runs" / "whole"), weights(tmp_path / "runs" / "cut")
    for key in whole:
        torch.testing.assert_close(cut[key], whole[key], rtol=0, atol=1e-6, msg=key)
    summary = json.loads((tmp_path / "runs" / "whole" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["global_step"] == 5 and math.isfinite(summary["metrics"]["eval/mlm_loss"])

    # export where hf/registry.py has an exact layout for the preset; else its one-line refusal
    ckpt = torch.load(tmp_path / "runs" / "whole" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    cfg = OmegaConf.create(ckpt["hyper_parameters"]["config"])
    try:
        model = hf_model_from_checkpoint(ckpt, encoder_config(cfg, ckpt["hyper_parameters"]["vocab_size"]))
    except UserError as err:
        assert "\n" not in str(err) and str(err)
        return
    module = PretrainModule.load_from_checkpoint(tmp_path / "runs" / "whole" / "checkpoints" / "last.ckpt",
                                                 map_location="cpu", weights_only=False).eval()
    batch = batch_for(module.tokenizer_json, real_sentences(SHARED_DATA), pairs=False)
    theirs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        mask = batch["attention_mask"].bool()
        logits = module.objectives["mlm"].head(module(batch))
        torch.testing.assert_close(model.eval()(**theirs).logits[mask], logits[mask], atol=1e-4, rtol=0)
