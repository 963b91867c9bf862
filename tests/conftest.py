"""Shared pytest fixtures."""
import socket
from pathlib import Path
from typing import Callable

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
GLUE_DIR = SHARED_DATA / "glue"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data sets in ../shared/data (see its README); CI has them at the same path."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data not found at {SHARED_DATA}: the tests run on real slices of it")
    return SHARED_DATA


def free_port() -> int:
    """A loopback port nothing holds now: a fixed rendezvous port fails the run whenever another job has it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call_main(capsys: pytest.CaptureFixture[str], main: Callable[[list[str]], int], argv: list[str]) -> tuple[int, str]:
    """A command's main() in this process (a subprocess pays seconds of torch imports): exit code, stderr."""
    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().err


REPO = Path(__file__).resolve().parents[1]

# A tiny CPU run on a small real slice: every end-to-end test starts from these overrides.
TINY = ["model.size=tiny", "model.hidden_size=64", "model.intermediate_size=128", "tokenizer.vocab_size=1000",
        "trainer.max_steps=4", "trainer.batch_size=8", "trainer.val_check_interval=2", "trainer.limit_val_batches=2",
        "trainer.log_every_n_steps=1", "data.max_seq_length=64", "logger.wandb.mode=disabled"]


@pytest.fixture
def tiny_overrides(tmp_path: Path, shared_data: Path) -> list[str]:
    """Overrides for a seconds-long run on 60 real Wikipedia documents, writing under tmp_path."""
    return TINY + [f"data.path={shared_data / 'wikipedia-en' / 'valid.txt'}", "data.max_documents=60",
                   f"data.cache_dir={tmp_path / 'cache'}", f"run.output_dir={tmp_path / 'runs'}"]
