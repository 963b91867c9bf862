"""Objectives on real masked batches: every registered objective gives a finite loss; SBO sees only the
span boundaries and the position."""
import pytest
import torch

from lightning_bert.config import load
from lightning_bert.data.datamodule import PretrainDataModule
from lightning_bert.objectives import OBJECTIVES
from lightning_bert.train.pretrain import PretrainModule
from lightning_bert.config import to_dict
from lightning_bert.data.masking import IGNORE

SETTINGS = {"mlm": [], "nsp": ["objective.sentence=nsp"], "sop": ["objective.sentence=sop"],
            "sbo": ["masking.unit=span", "objective.sbo=true"],
            "plm": ["objective.lm=plm", "model.attention=relative", "model.position_biased_input=false"],
            "gen_mlm": ["objective.lm=rtd"], "rtd": ["objective.lm=rtd"]}


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
    hidden, layers = module.encode(batch)  # as PretrainModule feeds its objectives (PLM runs the encoder itself)
    out = objective(hidden, batch, layers)
    assert torch.isfinite(out.loss) and out.preds.shape == out.target.shape and len(out.target) > 0


def test_sbo_logits_depend_only_on_the_span_boundaries_and_the_position(tiny_overrides: list[str]) -> None:
    """Through autograd, one span token at a time: the loss has gradient at the two outputs just outside the
    span (and at that token's relative-position row) and exactly zero everywhere else, the span's own
    positions included, as SpanBERT's y_i = f(x_{s-1}, x_{e+1}, p_{i-s+1})."""
    torch.manual_seed(0)
    module, batch = _module_and_batch(tiny_overrides + SETTINGS["sbo"])
    sbo = module.objectives["sbo"]
    rows, cols = torch.nonzero(batch["sbo_left"] >= 0, as_tuple=True)
    assert len(rows) > 10
    hidden0 = torch.randn(*batch["input_ids"].shape, module.encoder.config.hidden_size)
    for k in torch.linspace(0, len(rows) - 1, 8).long().tolist():
        r, c = int(rows[k]), int(cols[k])
        left, right = int(batch["sbo_left"][r, c]), int(batch["sbo_right"][r, c])
        labels = batch["mlm_labels"][r]
        assert left < c < right and (labels[left + 1:right] != IGNORE).all()  # c lies inside a whole span
        one = dict(batch, sbo_left=torch.full_like(batch["sbo_left"], -1), sbo_right=torch.full_like(batch["sbo_right"], -1))
        one["sbo_left"][r, c], one["sbo_right"][r, c] = left, right
        hidden = hidden0.clone().requires_grad_(True)
        sbo.zero_grad()
        sbo(hidden, one).loss_sum.backward()
        touched = {(int(i), int(j)) for i, j in torch.nonzero(hidden.grad.abs().sum(-1) > 0)}
        assert touched == {(r, left), (r, right)}, (r, c, left, right)
        position_rows = torch.nonzero(sbo.position.weight.grad.abs().sum(-1) > 0).flatten().tolist()
        assert position_rows == [c - left - 1]
        # and changing every other output, the span's own included, leaves the prediction unchanged
        other = hidden0 + torch.randn_like(hidden0)
        other[r, left], other[r, right] = hidden0[r, left], hidden0[r, right]
        with torch.no_grad():
            assert torch.equal(sbo(other, one).loss_sum, sbo(hidden0, one).loss_sum)
