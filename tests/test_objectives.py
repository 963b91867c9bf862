"""Objectives on real masked batches: every registered objective gives a finite loss; SBO learns."""
import numpy as np
import pytest
import torch

from lightning_bert.config import load
from lightning_bert.data.datamodule import PretrainDataModule
from lightning_bert.objectives import OBJECTIVES
from lightning_bert.pretrain import PretrainModule
from lightning_bert.config import to_dict

SETTINGS = {"mlm": [], "nsp": ["objective.sentence=nsp"], "sop": ["objective.sentence=sop"],
            "sbo": ["masking.unit=span", "objective.sbo=true"]}


def _module_and_batch(overrides: list[str]) -> tuple[PretrainModule, dict[str, torch.Tensor]]:
    cfg = load(overrides + ["model.dropout=0", "model.attention_dropout=0"])
    data = PretrainDataModule(cfg)
    data.setup()
    module = PretrainModule(to_dict(cfg), data.vocab_size)
    return module, next(iter(data.train_dataloader()))


def test_every_registered_objective_has_settings() -> None:
    assert set(SETTINGS) == set(OBJECTIVES)


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_objective_gives_finite_loss_and_needs_are_in_batch(name: str, tiny_overrides: list[str]) -> None:
    module, batch = _module_and_batch(tiny_overrides + SETTINGS[name])
    objective = module.objectives[name]
    assert set(objective.needs) <= set(batch)
    out = objective(module(batch), batch)
    assert torch.isfinite(out.loss) and out.preds.shape == out.target.shape and len(out.target) > 0


def test_sbo_loss_falls_on_a_repeated_batch(tiny_overrides: list[str]) -> None:
    torch.manual_seed(0)
    module, batch = _module_and_batch(tiny_overrides + SETTINGS["sbo"])
    params = list({id(p): p for p in module.parameters()}.values())
    optimizer = torch.optim.AdamW(params, lr=2e-3)
    losses = []
    for _ in range(40):
        loss = module.objectives["sbo"](module(batch), batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all() and np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
