"""A scheduler's SIGTERM / SIGUSR1 saves, records `interrupted` and exits 143 / 138; the resumed run continues on
exactly the data the checkpoint pins (its own tokenizer; a rebuilt cache checked against the checkpoint).
The signal is sent by the run to itself once a chosen step has finished (in this process: no kill is involved,
and the exit code is what train_main returns)."""
import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch

from conftest import call_main
from lightning_bert.train.pretrain import PretrainModule


def signalled(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], signum: int, step: int,
              overrides: list[str]) -> tuple[int, str]:
    from lightning_bert.cli import train_main

    finish_step = PretrainModule.on_train_batch_end

    def on_train_batch_end(self, *args) -> None:  # noqa: ANN001
        finish_step(self, *args)
        if self.global_step == step:
            os.kill(os.getpid(), signum)

    with monkeypatch.context() as patch:
        patch.setattr(PretrainModule, "on_train_batch_end", on_train_batch_end)
        return call_main(capsys, train_main, overrides)


def ckpt(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


def test_sigterm_saves_exits_143_and_resume_without_the_cache_equals_an_uninterrupted_run(
        tiny_overrides: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_bert.cli import train_main

    overrides = tiny_overrides + ["trainer.max_steps=5", "trainer.checkpoint_every_n_steps=2", "eval.probes=false",
                                  "data.max_documents=30"]
    assert call_main(capsys, train_main, overrides + ["run.name=whole"])[0] == 0
    code, err = signalled(monkeypatch, capsys, signal.SIGTERM, 3, overrides + ["run.name=cut"])
    assert code == 143 and err.strip().splitlines()[-1].startswith("error: stopped by SIGTERM at step 3"), err[-2000:]
    cut = tmp_path / "runs" / "cut"
    summary = json.loads((cut / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["error"] == "stopped by SIGTERM"
    saved = ckpt(cut)
    assert saved["global_step"] == 3 and saved["PretrainDataModule"]["cache"]["arrays"]["tokens.bin"]["bytes"] > 0

    shutil.rmtree(tmp_path / "cache")  # a requeued job on a node without the cache: tokenizer and ids rebuilt
    # A checkpoint pinning other data is refused in one line before training, unless forced.
    pinned = dict(saved, PretrainDataModule={**saved["PretrainDataModule"], "cache": {
        **saved["PretrainDataModule"]["cache"], "documents": 29}})
    torch.save(pinned, tmp_path / "other.ckpt")
    code, err = call_main(capsys, train_main, overrides + ["run.name=cut", f"run.resume={tmp_path / 'other.ckpt'}"])
    assert code == 2 and "token cache differs" in err.strip().splitlines()[-1] and "documents 29 -> 30" in err

    code, err = call_main(capsys, train_main, overrides + ["run.name=cut", "run.resume=auto"])
    assert code == 0, err[-2000:]
    one, two = ckpt(tmp_path / "runs" / "whole"), ckpt(cut)
    assert two["tokenizer"] == one["tokenizer"] and two["global_step"] == one["global_step"] == 5
    for name, value in one["state_dict"].items():
        torch.testing.assert_close(two["state_dict"][name], value, rtol=0, atol=1e-6, msg=name)


def test_sigusr1_saves_and_exits_138(tiny_overrides: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    code, err = signalled(monkeypatch, capsys, signal.SIGUSR1, 2,
                          tiny_overrides + ["trainer.max_steps=4", "eval.probes=false", "run.name=u"])
    assert code == 138 and "stopped by SIGUSR1 at step 2" in err, err[-2000:]
    run_dir = tmp_path / "runs" / "u"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["error"] == "stopped by SIGUSR1"
    assert ckpt(run_dir)["global_step"] == 2 and not (run_dir / "run.lock").exists()
