"""Config errors exit 2 with a one-line message naming the key, before any heavy work."""
import subprocess
import sys

import pytest

from lightning_bert.config import ConfigError, load
from conftest import REPO

BAD = {
    "data.nope=1": "data.nope",  # unknown key
    "nope.key=1": "nope",  # unknown group
    "trainer.max_steps=many": "trainer.max_steps",  # wrong type
    "masking.mode=sometimes": "masking.mode",  # value outside the allowed set
    "objective.sentence=xyz": "objective.sentence",
    "model.size=huge": "model.size",
    "model.num_heads=3": "model.num_heads",  # does not divide hidden 128
    "optim.lr=-1": "optim.lr",
    "experiment=nope": "nope",
    "objective.sbo=true": "objective.sbo",  # needs span masking
    "data.backend=hf_streaming": "data.valid_path",  # a stream has no held-out block: name held-out files
}


@pytest.mark.parametrize("override,key", BAD.items())
def test_bad_config_raises_naming_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load([override])


@pytest.mark.parametrize("override,key", list(BAD.items())[:4])
def test_train_py_exits_2_with_one_line(override: str, key: str) -> None:
    proc = subprocess.run([sys.executable, "train.py", override], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0] and lines[0].startswith("error:")


def test_overrides_and_presets_merge() -> None:
    cfg = load(["trainer.max_steps=7", "data.path=a.txt", "logger.wandb.tags=[x,y]"])
    assert cfg.trainer.max_steps == 7 and list(cfg.data.path) == ["a.txt"] and list(cfg.logger.wandb.tags) == ["x", "y"]
    assert load(["--trainer.max_steps=3"]).trainer.max_steps == 3  # `${args}` form from a W&B agent


def test_every_key_has_a_default_and_a_comment() -> None:
    from lightning_bert.config import describe

    rows = describe().splitlines()
    assert len(rows) > 60
    for row in rows:
        key_default, _, comment = row.strip().partition("  ")
        assert "=" in key_default and comment.strip(), f"no comment for {key_default}"
    help_text = subprocess.run([sys.executable, "train.py", "--help"], cwd=REPO, capture_output=True, text=True).stdout
    assert "masking.unit=token" in help_text and "SpanBERT" in help_text
