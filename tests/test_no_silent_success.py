"""A run that would train 0 steps, or validate on nothing, stops before training with one line naming the cause."""
from pathlib import Path

import pytest

from conftest import call_main


def refused(capsys: pytest.CaptureFixture[str], overrides: list[str]) -> str:
    from lightning_bert.cli import train_main

    code, err = call_main(capsys, train_main, overrides + ["run.name=nothing"])
    assert code == 2 and err.count("error: ") == 1, err[-2000:]
    return err.strip().splitlines()[-1]


def test_batch_larger_than_the_data_is_refused(tiny_overrides: list[str], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    line = refused(capsys, tiny_overrides + ["data.max_documents=4", "trainer.batch_size=512"])
    assert "one step takes 512 examples" in line and "nothing would train" in line
    assert not (tmp_path / "runs" / "nothing" / "summary.json").exists()


def test_validation_share_leaving_no_training_documents_is_refused(tiny_overrides: list[str],
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    line = refused(capsys, tiny_overrides + ["data.max_documents=10", "data.valid_fraction=0.95"])
    assert "data.valid_fraction=0.95 holds out 10 of the 10 documents" in line


def test_corpus_with_nothing_left_after_normalisation_is_refused(tiny_overrides: list[str], tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "controls.txt"  # documents of control characters only: the normaliser removes them all
    empty.write_text("\n\n".join("\x01\x02 \x03" for _ in range(6)) + "\n")
    line = refused(capsys, [o for o in tiny_overrides if not o.startswith("data.path")]
                   + [f"data.path={empty}", "data.format=text"])
    assert "the corpus has no tokens left after normalisation" in line, line
