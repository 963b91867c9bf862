"""The objective seam: the registry chooses what runs, `needs` is enforced, per-step state survives a
checkpoint, and the canonical evaluation asks the objective that can score it."""
from pathlib import Path
from typing import Iterator, Optional

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from conftest import call_main
from lightning_bert.cli import train_main
from lightning_bert.config import load, to_dict
from lightning_bert.data.datamodule import PretrainDataModule
from lightning_bert.errors import UserError
from lightning_bert.model.config import EncoderConfig
from lightning_bert.model.encoder import BertEncoder
from lightning_bert.objectives import OBJECTIVES, Objective, ObjectiveOutput, objective_names, register
from lightning_bert.train.pretrain import PretrainModule, split_batch

PLM = ["objective.lm=plm", "model.attention=relative", "model.position_biased_input=false"]


@pytest.fixture
def registry() -> Iterator[dict]:
    """The registry as it was before the test: a throwaway objective registered inside a test leaves with it."""
    before = dict(OBJECTIVES)
    yield OBJECTIVES
    OBJECTIVES.clear()
    OBJECTIVES.update(before)


class StepCounter(Objective):
    """A throwaway objective: a 2-way head on [CLS] (every row's label 0) that counts its training steps."""

    def __init__(self, cfg, encoder) -> None:
        super().__init__()
        self.head = nn.Linear(encoder.config.hidden_size, 2)
        self.num_classes = 2
        self.steps = 0

    @classmethod
    def selected(cls, cfg) -> bool:
        return True  # beside whatever else the config trains

    def count(self, batch: dict[str, Tensor]) -> Tensor:
        return torch.tensor(len(batch["input_ids"]))

    def forward(self, hidden: Optional[Tensor], batch: dict[str, Tensor], layers=None) -> ObjectiveOutput:
        self.steps += int(self.training)
        logits = self.head(hidden[:, 0])
        target = torch.zeros(len(logits), dtype=torch.long)
        return ObjectiveOutput(F.cross_entropy(logits, target, reduction="sum"), logits.argmax(-1), target)

    def step_state(self) -> dict[str, Tensor]:
        return {"steps": torch.tensor(self.steps)}

    def load_step_state(self, state: dict[str, Tensor]) -> None:
        self.steps = int(state["steps"])


def trainer(max_steps: int, **kwargs) -> pl.Trainer:
    return pl.Trainer(max_steps=max_steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      use_distributed_sampler=False, **kwargs)


def module_and_data(overrides: list[str]) -> tuple[PretrainModule, PretrainDataModule]:
    cfg = load(overrides)
    data = PretrainDataModule(cfg)
    data.setup()
    return PretrainModule(to_dict(cfg), data.vocab_size), data


def test_selection_follows_the_config_in_registration_order() -> None:
    assert objective_names(load()) == ["mlm"]
    assert objective_names(load(["objective.sentence=sop", "masking.unit=span", "objective.sbo=true"])) == [
        "mlm", "sop", "sbo"]
    assert objective_names(load(["experiment=xlnet"])) == ["plm"]


def test_a_named_objective_that_is_not_registered_fails_listing_the_registered_ones(registry: dict) -> None:
    del registry["sop"]
    with pytest.raises(UserError, match=r"objective.sentence='sop' names no registered objective; "
                                        r"registered: gen_mlm, mlm, nsp, plm, rtd, sbo$"):
        objective_names(load(["objective.sentence=sop"]))


def test_declarations_are_per_instance() -> None:
    encoder = BertEncoder(EncoderConfig(vocab_size=300, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                                        attention="disentangled", position_biased_input=False))
    plain, emd = (OBJECTIVES["mlm"](load(o), encoder) for o in ([], ["objective.emd=true"]))
    assert (plain.needs_layers, emd.needs_layers) == (False, True)
    assert plain.scores_canonical_mlm and not plain.runs_encoder


def test_micro_batches_keep_the_attention_mask_and_know_they_are_unpadded() -> None:
    mask = torch.ones(4, 6, dtype=torch.long)
    mask[3, 4:] = 0
    parts = split_batch({"input_ids": torch.ones(4, 6, dtype=torch.long), "attention_mask": mask}, 2)
    assert [p.unpadded for p in parts] == [True, False]
    assert all(torch.equal(p["attention_mask"], mask[i * 2:i * 2 + 2]) for i, p in enumerate(parts))


def test_step_state_survives_a_checkpoint_and_a_resume(registry: dict, tiny_overrides: list[str],
                                                       tmp_path: Path) -> None:
    register("counter")(StepCounter)
    module, data = module_and_data(tiny_overrides)
    trainer(2, limit_val_batches=0).fit(module, datamodule=data)
    assert module.objectives["counter"].steps == 2
    path = tmp_path / "two.ckpt"
    module.trainer.save_checkpoint(path)

    loaded = PretrainModule.load_from_checkpoint(path, map_location="cpu", weights_only=False)
    assert loaded.objectives["counter"].steps == 2

    fresh, data = module_and_data(tiny_overrides)
    assert fresh.objectives["counter"].steps == 0
    trainer(3, limit_val_batches=0).fit(fresh, datamodule=data, ckpt_path=path)
    assert fresh.objectives["counter"].steps == 3  # resumed at 2, then one more step


def test_a_stateless_run_saves_no_objective_state(tiny_overrides: list[str], tmp_path: Path) -> None:
    module, data = module_and_data(tiny_overrides)
    trainer(1, limit_val_batches=0).fit(module, datamodule=data)
    module.trainer.save_checkpoint(tmp_path / "one.ckpt")
    assert "objective_state" not in torch.load(tmp_path / "one.ckpt", weights_only=False)


@pytest.mark.parametrize("overrides, scored", [([], True), (PLM, False)])
def test_canonical_evaluation_is_logged_only_by_an_objective_that_scores_it(
        overrides: list[str], scored: bool, tiny_overrides: list[str]) -> None:
    module, data = module_and_data(tiny_overrides + overrides)
    run = trainer(1, limit_val_batches=2)
    run.validate(module, datamodule=data, verbose=False)
    logged = {k for k in run.callback_metrics if k.startswith("eval/")}
    assert logged == ({"eval/mlm_loss", "eval/mlm_acc", "eval/mlm_loss_per_char"} if scored else set())
    assert "val/loss" in run.callback_metrics


def test_an_objective_needing_a_key_the_data_lacks_fails_with_one_line(
        registry: dict, tiny_overrides: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    @register("needy")
    class Needy(StepCounter):
        @property
        def needs(self) -> tuple[str, ...]:
            return ("rtd_labels",)

    code, err = call_main(capsys, train_main, tiny_overrides + ["run.name=needy"])
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1, err[-2000:]
    assert lines[0].startswith("error: objective 'needy' needs batch key 'rtd_labels', which the training data "
                               "does not provide (it holds attention_mask, input_ids, mlm_labels, token_type_ids)")
