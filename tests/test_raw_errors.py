"""The raw errors of issue 21 finding 5, each now one line and exit 2 (or a UserError naming the cause),
and `lightning-bert train --key value` (finding 6)."""
from __future__ import annotations

import errno
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lightning_bert.errors import ConfigError, UserError
from conftest import GLUE_DIR, TINY, call_main


def test_train_takes_dashed_key_value_forms(tmp_path: Path, shared_data: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """`lightning-bert train --model.size tiny ...`: --key value, --key=value and --flag, as README says."""
    from lightning_bert.cli import main

    argv = ["train"]
    for item in TINY + [f"data.path={shared_data / 'wikipedia-en' / 'valid.txt'}", "data.max_documents=40",
                        f"data.cache_dir={tmp_path / 'cache'}", f"run.output_dir={tmp_path / 'runs'}", "run.name=r"]:
        key, value = item.split("=", 1)
        argv += [f"--{key}", value] if len(argv) % 2 else [f"--{key}={value}"]
    argv += ["--trainer.max_steps", "2", "--eval.probes=false", "--run.resume_force"]  # a bare flag
    code, err = call_main(capsys, main, argv)
    assert code == 0, err[-2000:]
    summary = json.loads((tmp_path / "runs" / "r" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["global_step"] == 2
    code, err = call_main(capsys, main, ["train", "--model.size", "huge"])
    assert code == 2 and err.startswith("error: model.size='huge' is not allowed")
    code, err = call_main(capsys, main, ["train", "--model.nope", "1"])
    assert code == 2 and "unknown config key 'model.nope'" in err


def test_machine_checks_come_before_any_data_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_bert.config import load
    from lightning_bert.train.fit import run

    base = TINY + [f"data.cache_dir={tmp_path / 'cache'}", f"run.output_dir={tmp_path / 'runs'}"]
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match=r"^trainer.accelerator=gpu but this machine has no CUDA GPU"):
            run(load(base + ["trainer.accelerator=gpu"]))
    for name in ("SLURM_NTASKS", "SLURM_JOB_NAME", "TORCHELASTIC_RUN_ID", "GROUP_RANK", "LOCAL_WORLD_SIZE",
                 "MASTER_ADDR", "NODE_RANK", "RANK", "LSB_JOBID"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(UserError, match=r"^trainer.num_nodes=2 needs a launcher"):  # it hung before
        run(load(base + ["trainer.num_nodes=2"]))
    assert not (tmp_path / "cache").exists() and not (tmp_path / "runs").exists()


def test_unwritable_cache_and_output_directories_are_one_line(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from lightning_bert.cli import train_main

    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a directory under a regular file cannot be created, even by root
    code, err = call_main(capsys, train_main, TINY + [f"data.cache_dir={blocker / 'cache'}",
                                                      f"run.output_dir={tmp_path / 'runs'}"])
    assert code == 2 and err == f"error: cannot write {blocker / 'cache'}: Not a directory\n"
    code, err = call_main(capsys, train_main, TINY + [f"data.cache_dir={tmp_path / 'cache'}",
                                                      f"run.output_dir={blocker / 'runs'}", "run.name=r"])
    assert code == 2 and err.startswith(f"error: cannot write {blocker / 'runs' / 'r'}")
    assert len(err.splitlines()) == 1


def test_os_errors_about_paths_become_one_line_at_the_boundary(capsys: pytest.CaptureFixture[str]) -> None:
    from lightning_bert.args import run_main

    def full(args: list[str]) -> int:
        raise OSError(errno.ENOSPC, "No space left on device", "/data/out/model.bin")

    assert call_main(capsys, lambda a: run_main("", full, a), []) == (
        2, "error: cannot write /data/out/model.bin: No space left on device\n")

    def missing(args: list[str]) -> int:
        open("/no/such/input.txt")
        return 0

    assert call_main(capsys, lambda a: run_main("", missing, a), []) == (
        2, "error: cannot read /no/such/input.txt: No such file or directory\n")
    for bug in (TypeError("a bug"), OSError("no path: a bug")):  # programming errors keep their traceback
        def body(args: list[str], bug: Exception = bug) -> int:
            raise bug

        with pytest.raises(type(bug)):
            run_main("", body, [])


def test_finetune_output_that_is_a_directory_fails_before_the_work(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from lightning_bert.eval.finetune import main

    code, err = call_main(capsys, main, ["ckpt=never-read.ckpt", f"output={tmp_path}"])
    assert code == 2 and err.startswith(f"error: output={tmp_path} is a directory")


def test_fine_tuning_options_are_checked_before_pretraining_under_their_eval_names() -> None:
    from lightning_bert.config import load
    from lightning_bert.eval.finetune import check_downstream

    with pytest.raises(ConfigError, match=r"^eval.glue_seeds=0 is out of range"):
        load(["eval.downstream=[sst2]", "eval.glue_seeds=0"])
    cfg_eval = SimpleNamespace(downstream=["sst2"], glue_seeds=1, glue_dir=str(GLUE_DIR), max_train_examples=0)
    with pytest.raises(ConfigError, match=r"^eval.max_train_examples=0 is out of range"):
        check_downstream(cfg_eval)  # what fit.run calls first: FinetuneConfig's own rules, under eval.* names


def test_glue_labels_outside_the_task_classes(tmp_path: Path) -> None:
    from lightning_bert.eval.glue import read_task

    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "train.tsv").write_text("sentence\tlabel\na fine film\t1\nawful\t5\n")
    with pytest.raises(UserError, match=r"train.tsv:3: label 5 is outside sst2's classes; it must be in \[0, 1\]"):
        read_task("sst2", "train", tmp_path)


def test_sbert_scores_that_are_not_numbers(tmp_path: Path) -> None:
    from lightning_bert.eval.sbert import read_pairs_file

    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("sentence1\tsentence2\tscore\na cat\ta dog\t3.5\na car\ta bus\tvery similar\n")
    with pytest.raises(UserError, match=r"pairs.tsv:3: score 'very similar' is not a number"):
        read_pairs_file(tsv)
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text('{"sentence1": "a", "sentence2": "b", "score": 1}\n{"sentence1": "a", "sent\n')
    with pytest.raises(UserError, match=r"pairs.jsonl:2: not a JSON object"):
        read_pairs_file(jsonl)
    jsonl.write_text('{"sentence1": "a", "sentence2": "b", "score": "nan"}\n')
    with pytest.raises(UserError, match="not a finite number"):
        read_pairs_file(jsonl)


def test_probe_with_zero_examples(capsys: pytest.CaptureFixture[str]) -> None:
    from lightning_bert.eval.probes import main

    code, err = call_main(capsys, main, ["never-read.ckpt", "max_examples=0"])
    assert code == 2 and err.startswith("error: probe.max_examples=0 is out of range; it must be >= 1")


def transformers_dir(path: Path) -> Path:
    """A directory whose config.json and tokenizer.json are sound (weights added by the test)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordPiece

    from lightning_bert.data.tokenizer import SPECIAL_TOKENS

    vocab = {token: i for i, token in enumerate(list(SPECIAL_TOKENS) + ["a", "b", "c"])}
    path.mkdir()
    Tokenizer(WordPiece(vocab, unk_token="[UNK]")).save(str(path / "tokenizer.json"))
    (path / "config.json").write_text(json.dumps({
        "model_type": "bert", "architectures": ["BertForMaskedLM"], "vocab_size": len(vocab), "hidden_size": 16,
        "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 64,
        "type_vocab_size": 2, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "layer_norm_eps": 1e-12, "hidden_act": "gelu"}))
    return path


def test_transformers_directory_whose_files_are_not_what_they_claim(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from lightning_bert.hf.load import load_dir

    good = transformers_dir(tmp_path / "hf")
    save_file({"x": torch.zeros(256)}, str(good / "model.safetensors"))
    data = (good / "model.safetensors").read_bytes()
    (good / "model.safetensors").write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(UserError, match=r"the weights cannot be read, the file is damaged"):
        load_dir(str(good))
    (good / "tokenizer.json").write_text('{"model": {"type": "WordPiece", "vocab": {"[PAD]": 0')  # cut off
    with pytest.raises(UserError, match=r"tokenizer.json is not valid JSON"):
        load_dir(str(good))
    (good / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "WordPiece"}}')  # no vocab
    with pytest.raises(UserError, match=r"tokenizer.json is not a tokenizer"):
        load_dir(str(good))
    (good / "config.json").write_text("model_type: bert\n")  # YAML, not JSON
    with pytest.raises(UserError, match=r"config.json is not valid JSON"):
        load_dir(str(good))
