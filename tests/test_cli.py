"""One console script: every command's --help lists its keys; every command's bad input is one line, exit 2;
the old entry points still work; the core training path never imports transformers."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, TINY, call_main

HF_PACKAGES = ("transformers", "safetensors", "sentence_transformers")


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lightning_bert", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "WANDB_MODE": "disabled"})


HELP_KEYS = {  # command -> keys its --help must list with their default
    "train": ("masking.unit=token", "model.init_from=None"), "sweep": ("count=None",), "report": ("out=None",),
    "finetune": ("seeds=3",), "sbert": ("loss=cosent", "whiten=False", "logger.wandb.mode=auto"),
    "probe": ("max_examples=None",), "preview": ("n=3",), "export": ("pooling=cls", "overwrite=False"),
}


@pytest.mark.parametrize("command", list(HELP_KEYS))
def test_every_command_help_lists_keys_with_defaults_and_comments(command: str) -> None:
    proc = cli(command, "--help")
    assert proc.returncode == 0, proc.stderr
    for key in HELP_KEYS[command]:
        line = next((l for l in proc.stdout.splitlines() if l.strip().startswith(key)), None)
        assert line is not None, f"{key} missing from {command} --help"
        assert len(line.split(key, 1)[1].strip()) > 3  # its one-line comment follows


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    from lightning_bert import cli as one_cli

    return call_main(capsys, one_cli.main, list(args))


def test_every_command_bad_input_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "missing.ckpt")
    cases = {
        "train": (["model.bogus=1"], "model.bogus"),
        "sweep": ([str(tmp_path / "none.yaml")], "none.yaml"),
        "report": ([str(tmp_path / "nothing")], "nothing"),
        "finetune": ([f"ckpt={missing}", "tasks=sst2"], "missing.ckpt"),
        "sbert": ([f"ckpt={missing}", f"output_dir={tmp_path}"], "missing.ckpt"),
        "probe": ([missing], "missing.ckpt"),
        "preview": (["masking.unit=bogus"], "masking.unit"),
        "export": ([missing, str(tmp_path / "out")], "missing.ckpt"),
    }
    for command, (args, needle) in cases.items():
        code, err = run_cli(capsys, command, *args)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (command, err)
        assert needle in lines[0], (command, lines[0])
    for args, needle in ((["export", missing, "--bogus"], "--bogus"), (["sbert", "loss=hinge"], "loss"),
                         (["finetune", "ckpt=x", "seeds=0"], "seeds"), (["nope"], "unknown command")):
        code, err = run_cli(capsys, *args)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    # and as a process: nothing else reaches stderr on the way (import warnings, a traceback)
    for args, needle in ((["train", "model.bogus=1"], "model.bogus"), (["export", missing, str(tmp_path / "o")], "missing")):
        proc = cli(*args)
        assert proc.returncode == 2 and proc.stderr.startswith("error: ") and needle in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_console_script_points_at_the_one_cli() -> None:
    import importlib
    import tomllib

    from lightning_bert import cli

    target = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]["lightning-bert"]
    module, function = target.split(":")
    assert getattr(importlib.import_module(module), function) is cli.main
    assert set(cli.COMMANDS) == {"train", "sweep", "report", "finetune", "sbert", "probe", "preview", "export"}
    assert cli.main([]) == 2


def test_old_entry_points_run_the_same_commands(tmp_path: Path) -> None:
    for argv in (["train.py", "--help"], ["-m", "lightning_bert.export", "--help"], ["-m", "lightning_bert", "sbert", "--help"],
                 ["-m", "lightning_bert", "finetune", "--help"], ["-m", "lightning_bert", "probe", "--help"]):
        proc = subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "keys (default, meaning)" in proc.stdout, (argv, proc.stderr)
    proc = subprocess.run([sys.executable, "-m", "lightning_bert.preview", "masking.rate=2"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: masking.rate")


# Records who imports a Hugging Face package: the first frame outside the import machinery.
IMPORT_SPY = """
import sys
class Spy:
    importers = set()
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in HF and '.' not in name:
            frame = sys._getframe(1)
            while frame and frame.f_globals.get('__name__', '').startswith(('importlib', '_frozen_importlib')):
                frame = frame.f_back
            Spy.importers.add(frame.f_globals.get('__name__', '?') if frame else '?')
        return None
sys.meta_path.insert(0, Spy())
"""


def test_core_training_path_never_imports_transformers(tmp_path: Path, shared_data: Path) -> None:
    """A real (tiny) `python train.py` run: no lightning_bert module imports transformers, safetensors or
    sentence-transformers. (torchmetrics imports transformers by itself when it is installed, for BERTScore;
    a core install, without the hf extra, has none of them.)"""
    overrides = TINY + [f"data.path={shared_data / 'wikipedia-en' / 'valid.txt'}", "data.max_documents=30",
                        f"data.cache_dir={tmp_path / 'cache'}", f"run.output_dir={tmp_path / 'runs'}",
                        "trainer.max_steps=2", "eval.probes=false"]
    code = (f"HF = {HF_PACKAGES!r}\n" + IMPORT_SPY + "import runpy\n"
            f"sys.argv = ['train.py', *{overrides!r}]\n"
            "try:\n    runpy.run_path('train.py', run_name='__main__')\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print('IMPORTERS:', sorted(Spy.importers))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "WANDB_MODE": "disabled"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    importers = eval(proc.stdout.split("IMPORTERS:", 1)[1].strip())
    assert not [m for m in importers if m.startswith(("lightning_bert", "__main__", "?"))], importers
    assert list((tmp_path / "runs").glob("*/summary.json"))  # the run really happened
    spy = subprocess.run([sys.executable, "-c", f"HF = {HF_PACKAGES!r}\n" + IMPORT_SPY +
                          "from lightning_bert.hf.bert import BertFamilyAdapter\n"
                          "from lightning_bert.model.config import EncoderConfig\n"
                          "BertFamilyAdapter().hf_config(EncoderConfig(vocab_size=100))\nprint(sorted(Spy.importers))"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "'lightning_bert.hf.bert'" in spy.stdout, spy.stderr[-1000:]  # the spy does see an import by our code
