"""GLUE fine-tuning: config and CLI errors, medians, a tiny model that learns SST-2, and the whole path
(real tiny pretraining run -> CLI -> results JSON with every summary key)."""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import torch
from omegaconf import OmegaConf

from lightning_bert import config
from lightning_bert.train.checkpoint import encoder_config
from lightning_bert.config import ConfigError
from lightning_bert.data.tokenizer import train_tokenizer
from lightning_bert.errors import UserError
from lightning_bert.eval.finetune import (GlueModule, check_downstream, initial_encoder, load_config, main, pooler_for,
                                          run_downstream, summarize)
from lightning_bert.eval.glue import TASKS
from lightning_bert.eval.glue import read_task
from lightning_bert.model.encoder import BertEncoder
from conftest import GLUE_DIR, REPO



@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny matrices: one thread is as fast, and does not spin against other processes on the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_load_config_defaults_and_overrides() -> None:
    cfg = load_config(["ckpt=a.ckpt", "tasks=sst2", "seeds=5", "lr=2e-5"])
    assert (cfg.ckpt, cfg.tasks, cfg.seeds, cfg.lr, cfg.max_seq_length, cfg.batch_size) == ("a.ckpt", ["sst2"], 5, 2e-5, 128, 32)
    assert load_config(["ckpt=a", "tasks=[sst2,mrpc]"]).tasks == ["sst2", "mrpc"]
    assert load_config(["ckpt=a"]).tasks == ["cola", "sst2", "mrpc", "rte", "stsb", "wnli"]


@pytest.mark.parametrize("overrides, message", [
    (["ckpt=a", "foo=1"], "unknown finetune key 'foo'; allowed: ckpt, tasks"),
    (["ckpt=a", "tasks=[sst2,qnli]"], "finetune.tasks='qnli' is not allowed; choose one of cola, sst2, mrpc"),
    (["ckpt=a", "seeds=0"], "finetune.seeds=0 is out of range"),
    (["ckpt=a", "lr=fast"], "bad value for 'lr'"),
    (["tasks=sst2"], "ckpt=PATH is required"),
    (["a.ckpt", "b.ckpt"], "unexpected argument 'b.ckpt'"),
    (["experiment=bert", "ckpt=a"], "unknown finetune key 'experiment'"),
])
def test_config_errors_are_one_line(overrides: list[str], message: str) -> None:
    with pytest.raises(UserError) as err:
        load_config(overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_cli_bad_checkpoint_or_task_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    not_a_ckpt = tmp_path / "notes.txt"
    not_a_ckpt.write_text("hello")
    for argv, message in ([[f"ckpt={tmp_path / 'missing.ckpt'}"], "checkpoint not found"],
                          [[f"ckpt={not_a_ckpt}"], "cannot read checkpoint"],
                          [["ckpt=x", "tasks=[mnli]"], "finetune.tasks='mnli' is not allowed"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    with pytest.raises(UserError, match="unknown downstream task 'qnli'"):
        run_downstream(tmp_path / "x.ckpt", OmegaConf.create({"downstream": ["glue:qnli"], "glue_dir": "x", "glue_seeds": 1}))


def test_summarize_takes_medians_and_the_glue_average() -> None:
    out = summarize({"mrpc": [{"f1": 0.8, "acc": 0.7}, {"f1": 0.9, "acc": 0.6}, {"f1": 0.85, "acc": 0.75}],
                     "sst2": [{"acc": 0.5}, {"acc": 0.7}, {"acc": 0.6}]})
    assert out["glue/mrpc/f1"] == 0.85 and out["glue/mrpc/acc"] == 0.7 and out["glue/sst2/acc"] == 0.6
    assert out["glue/avg"] == pytest.approx(((0.85 + 0.7) / 2 + 0.6) / 2)


@pytest.fixture(scope="module")
def sst2_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny encoder + WordPiece trained on SST-2 train, in the pretraining checkpoint layout."""
    tokenizer = train_tokenizer("wordpiece", [a for a, _, _ in read_task("sst2", "train", GLUE_DIR)], 4000)
    cfg = config.load(["model.hidden_size=64", "model.intermediate_size=128"])
    torch.manual_seed(0)
    encoder = BertEncoder(encoder_config(cfg, tokenizer.get_vocab_size()))
    path = tmp_path_factory.mktemp("ckpt") / "random.ckpt"
    torch.save({"state_dict": {f"encoder.{k}": v for k, v in encoder.state_dict().items()},
                "hyper_parameters": {"config": config.to_dict(cfg)}, "tokenizer": tokenizer.to_str()}, path)
    return path


@pytest.mark.slow
def test_tiny_model_beats_the_majority_class_on_sst2(sst2_ckpt: Path, one_thread: None) -> None:
    majority = max(sum(y for *_, y in read_task("sst2", "dev", GLUE_DIR)) / 872, 0.5)  # 444/872 = 0.509
    eval_cfg = config.load(["eval.downstream=[glue:sst2]", f"eval.glue_dir={GLUE_DIR}"]).eval
    # From random init, on 3,000 examples: 0.71-0.74 over 4 init seeds (measured), so a margin of 0.09 is safe.
    summary = run_downstream(sst2_ckpt, eval_cfg, max_train_examples=3000, epochs=2, lr=1e-3, accelerator="cpu")
    assert set(summary) == {"glue/sst2/acc", "glue/avg"}
    assert summary["glue/sst2/acc"] > majority + 0.09


@pytest.mark.slow
def test_pretraining_then_cli_on_its_checkpoint(tiny_overrides: list[str], tmp_path: Path, one_thread: None,
                                                capsys: pytest.CaptureFixture) -> None:
    from lightning_bert.train.fit import run

    # eval.downstream: scores land in the run record's summary (issue #5, section 4).
    summary = run(config.load(tiny_overrides + ["run.name=pre", "eval.downstream=[glue:mrpc,sts]",
                                                "eval.max_train_examples=64", f"eval.glue_dir={GLUE_DIR}"]))
    assert {"glue/mrpc/f1", "glue/mrpc/acc", "glue/avg", "sts/mean/spearman", "sts/eos_norm/anisotropy"} <= set(summary["metrics"])
    ckpt = Path(summary["run_dir"]) / "checkpoints" / "last.ckpt"
    out = tmp_path / "results" / "glue.json"
    argv = [f"ckpt={ckpt}", "tasks=[mrpc,stsb]", "seeds=2", "max_train_examples=64", "epochs=1", "sts=true",
            f"glue_dir={GLUE_DIR}", f"output={out}", "progress=false", "accelerator=cpu"]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "mrpc   f1" in table and "stsb   spearman" in table and "mean_norm" in table
    result = json.loads(out.read_text())
    assert result["seeds"] == [0, 1] and len(result["results"]["stsb"]) == 2 and len(result["sts"]) == 6
    keys = {"glue/mrpc/f1", "glue/mrpc/acc", "glue/stsb/pearson", "glue/stsb/spearman", "glue/avg",
            "sts/mean/spearman", "sts/cls_norm/anisotropy", "sts/eos/spearman"}
    assert keys <= set(result["summary"])
    runs = result["results"]["stsb"]  # the summary is the median over the seeds' own scores
    assert result["summary"]["glue/stsb/spearman"] == statistics.median(r["spearman"] for r in runs)
    assert result["pooler"] == "fresh"  # a sentence=none checkpoint has no pretrained pooler


def test_random_init_is_a_fresh_init_with_the_same_seed(sst2_ckpt: Path) -> None:
    pretrained, _ = initial_encoder(load_config([f"ckpt={sst2_ckpt}"]))
    first, _ = initial_encoder(load_config([f"ckpt={sst2_ckpt}", "random_init=true", "seed=7"]))
    torch.manual_seed(7)
    fresh = BertEncoder(pretrained.config)
    state, pre = first.state_dict(), pretrained.state_dict()
    assert state.keys() == fresh.state_dict().keys()
    for name, value in fresh.state_dict().items():
        torch.testing.assert_close(state[name], value, rtol=0, atol=0, msg=name)
    # and it differs from the checkpoint's weights (which came from seed 0) in every tensor that init draws
    assert all(not torch.equal(state[n], pre[n]) for n in state if pre[n].std() > 0)


def _nsp_checkpoint(path: Path, sentence: str) -> Path:
    """A PretrainModule (tiny, with an NSP/SOP head when sentence != none) saved in the checkpoint layout."""
    from lightning_bert.train.pretrain import PretrainModule

    tokenizer = train_tokenizer("wordpiece", [a for a, _, _ in read_task("sst2", "dev", GLUE_DIR)], 500)
    cfg = config.load(["model.hidden_size=32", "model.intermediate_size=64", "model.num_layers=1",
                       f"objective.sentence={sentence}"])
    torch.manual_seed(3)
    module = PretrainModule(config.to_dict(cfg), tokenizer.get_vocab_size())
    with torch.no_grad():  # a pooler that no fresh init could produce
        for p in module.parameters():
            p.add_(torch.rand_like(p))
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": {"config": config.to_dict(cfg)},
                "tokenizer": tokenizer.to_str()}, path)
    return path


@pytest.mark.parametrize("sentence", ["nsp", "sop"])
def test_finetuning_keeps_the_pretrained_pooler(sentence: str, tmp_path: Path) -> None:
    ckpt = _nsp_checkpoint(tmp_path / "p.ckpt", sentence)
    saved = torch.load(ckpt, weights_only=False)["state_dict"]
    cfg = load_config([f"ckpt={ckpt}"])
    encoder, _ = initial_encoder(cfg)
    model = GlueModule(encoder, TASKS["mrpc"], 1e-4, 0.01, 1, 10, pooler_for(cfg))
    for name in ("weight", "bias"):  # the GlueModule's pooler, as fine-tuning starts, is the checkpoint's
        torch.testing.assert_close(getattr(model.head.pooler, name), saved[f"objectives.{sentence}.head.pooler.{name}"],
                                   rtol=0, atol=0)
    for option in (["pooler=reinit"], ["random_init=true"]):  # BERT's recipe is the default, not the only choice
        cfg = load_config([f"ckpt={ckpt}", *option])
        assert pooler_for(cfg) is None
        fresh = GlueModule(encoder, TASKS["mrpc"], 1e-4, 0.01, 1, 10, pooler_for(cfg)).head.pooler.weight
        assert not torch.equal(fresh, saved[f"objectives.{sentence}.head.pooler.weight"])
    assert pooler_for(load_config([f"ckpt={_nsp_checkpoint(tmp_path / 'n.ckpt', 'none')}"])) is None
    with pytest.raises(ConfigError, match="finetune.pooler='keep' is not allowed"):
        load_config([f"ckpt={ckpt}", "pooler=keep"])


@pytest.mark.parametrize("override, message", [
    ("eval.glue_dir=/no/such/glue", "GLUE file not found: /no/such/glue/SST-2/train.tsv"),
    ("eval.downstream=[glue:qnli]", "eval.downstream='qnli' is not allowed"),
])
def test_bad_downstream_stops_before_pretraining(override: str, message: str, tiny_overrides: list[str],
                                                 tmp_path: Path) -> None:
    argv = [*tiny_overrides, "eval.downstream=[glue:sst2,sts]", override, "run.name=never"]
    start = time.time()
    proc = subprocess.run([sys.executable, "train.py", *argv], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "runs" / "never").exists() and not (tmp_path / "cache").exists()  # no data work done
    assert time.time() - start < 30


def test_check_downstream_reads_every_needed_file(tmp_path: Path) -> None:
    import shutil

    eval_cfg = config.load(["eval.downstream=[glue:mrpc,sts]", f"eval.glue_dir={tmp_path}"]).eval
    shutil.copytree(GLUE_DIR / "MRPC", tmp_path / "MRPC")
    with pytest.raises(UserError, match="STS-B/dev.tsv"):  # sts needs STS-B dev
        check_downstream(eval_cfg)
    shutil.copytree(GLUE_DIR / "STS-B", tmp_path / "STS-B")
    check_downstream(eval_cfg)
    (tmp_path / "MRPC" / "dev.tsv").write_text("Quality\n1\tonly two fields\n")
    with pytest.raises(UserError, match="not a MRPC row"):
        check_downstream(eval_cfg)
