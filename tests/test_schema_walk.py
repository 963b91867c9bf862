"""Every key of the config schema refuses a wrong type, and every numeric key a value outside what the
libraries accept, as a ConfigError: one line that names the key (issue 21: bad values failed deep in torch,
tokenizers or Lightning, after the data work)."""
import dataclasses
import subprocess
import sys
from typing import Iterator

import pytest

from lightning_bert.config import Config, load
from lightning_bert.errors import ConfigError
from conftest import REPO

# One value per numeric key that torch, tokenizers, numpy or Lightning would refuse (or that trains nothing).
# A numeric key added to the schema must be listed here: the walk below fails for a key it does not know.
OUT_OF_RANGE = {
    "run.seed": -1,
    "data.max_documents": 1, "data.valid_fraction": 1.5, "data.max_seq_length": 8, "data.short_seq_prob": 2,
    "data.num_workers": -1,
    "tokenizer.vocab_size": 10, "tokenizer.min_frequency": -1,
    "model.num_layers": 0, "model.hidden_size": 0, "model.num_heads": 0, "model.intermediate_size": 0,
    "model.embedding_size": 0, "model.dropout": 1.0, "model.attention_dropout": -0.1,
    "model.max_position_embeddings": 0, "model.max_relative_positions": -2, "model.position_buckets": 1,
    "model.rope_theta": 0, "model.local_rope_theta": -1, "model.local_window": 0, "model.global_every": 0,
    "masking.rate": 0, "masking.mask_prob": 1.5, "masking.random_prob": -0.1, "masking.dupe_factor": 0,
    "masking.span_p": 0, "masking.span_max": 0,
    "objective.sentence_weight": -1, "objective.plm_k": 1, "objective.plm_max_span": 0,
    "objective.rtd_generator_width": 0, "objective.rtd_generator_depth": 1.5, "objective.rtd_weight": 0,
    "optim.lr": 0, "optim.weight_decay": -0.1, "optim.beta1": 1.0, "optim.beta2": -0.1, "optim.eps": -1e-8,
    "optim.warmup_steps": -1, "optim.min_lr_ratio": 2,
    "trainer.max_steps": 0, "trainer.max_tokens": 0, "trainer.batch_size": 0, "trainer.accumulate_grad_batches": 0,
    "trainer.devices": 0, "trainer.num_nodes": 0, "trainer.gradient_clip_val": -1, "trainer.val_check_interval": 0,
    "trainer.limit_val_batches": -1, "trainer.log_every_n_steps": 0, "trainer.checkpoint_every_n_steps": 0,
    "trainer.skip_nonfinite": -1, "trainer.peak_flops": 0, "trainer.max_flops": 0,
    "logger.wandb.init_timeout": 0,
    "eval.glue_seeds": 0, "eval.max_train_examples": 0,
}
WRONG_TYPE = {"int": "abc", "float": "abc", "bool": "maybe", "str": "[1,2]", "list": "{a: 1}"}


def schema_keys(cls: type = Config, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(dotted key, base type name) of every leaf of the schema."""
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.default_factory):
            yield from schema_keys(f.default_factory, f"{prefix}{f.name}.")
            continue
        kind = str(f.type).removeprefix("Optional[").removesuffix("]")
        yield f"{prefix}{f.name}", kind.split("[")[0]


KEYS = list(schema_keys())


def one_line_error(override: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load([override])
    text = str(caught.value)
    assert "\n" not in text.strip()
    return text


@pytest.mark.parametrize("key,kind", KEYS, ids=[k for k, _ in KEYS])
def test_every_key_refuses_a_wrong_type(key: str, kind: str) -> None:
    if key == "run.experiment":  # names a preset: a wrong one is an unknown experiment
        assert "unknown experiment" in one_line_error(f"{key}=[1,2]")
        return
    assert key in one_line_error(f"{key}={WRONG_TYPE[kind]}")
    if kind == "list":  # a list of lists
        assert key in one_line_error(f"{key}=[[1]]")


NUMERIC = [k for k, kind in KEYS if kind in ("int", "float")]


def test_every_numeric_key_has_an_out_of_range_value() -> None:
    assert sorted(set(NUMERIC) - set(OUT_OF_RANGE)) == []
    assert sorted(set(OUT_OF_RANGE) - set(NUMERIC)) == []


@pytest.mark.parametrize("key", NUMERIC)
def test_every_numeric_key_refuses_an_out_of_range_value(key: str) -> None:
    text = one_line_error(f"{key}={OUT_OF_RANGE[key]}")
    assert key in text and ("must be" in text or "it must" in text), text


def test_train_py_refuses_a_library_range_in_one_line() -> None:
    proc = subprocess.run([sys.executable, "train.py", "optim.beta2=1.0"], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0] == "error: optim.beta2=1.0 is out of range; it must be in [0, 1)"
