"""Replaced-token detection (objectives/rtd.py): corruption, labels, GDES gradients, exact accumulation,
repeatable draws, the checkpoint's encoder.* under GDES, and the one-line refusals. In-process, tiny."""
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

from lightning_bert import config as schema
from lightning_bert.data.masking import IGNORE
from lightning_bert.data.tokenizer import CLS_ID, MASK_ID, PAD_ID, SEP_ID
from lightning_bert.errors import ConfigError
from lightning_bert.model.encoder import BertEncoder
from lightning_bert.objectives import build_objectives
from lightning_bert.objectives.rtd import CORRUPTED, uniforms
from lightning_bert.train.checkpoint import encoder_config

VOCAB = 300
TINY_RTD = ["objective.lm=rtd", "model.hidden_size=32", "model.intermediate_size=64", "model.dropout=0",
            "model.attention_dropout=0"]


def build(*overrides: str) -> tuple[BertEncoder, Any]:
    cfg = schema.load([*TINY_RTD, *overrides])
    torch.manual_seed(0)
    encoder = BertEncoder(encoder_config(cfg, VOCAB))
    return encoder, build_objectives(OmegaConf.to_object(cfg), encoder)


def masked_batch(seed: int = 0, batch: int = 8, length: int = 24) -> dict[str, torch.Tensor]:
    """[CLS] text [SEP] text [SEP] + padding, 30% of the text selected: 80% [MASK], 10% random, 10% kept."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (batch, length), generator=g)
    ids[:, 0], ids[:, length // 2], ids[:, -1] = CLS_ID, SEP_ID, SEP_ID
    for row in range(0, batch, 3):  # some rows padded after their last [SEP]
        end = length - 4 - row // 3
        ids[row, end], ids[row, end + 1:] = SEP_ID, PAD_ID
    attention = (ids != PAD_ID).long()
    special = (ids == CLS_ID) | (ids == SEP_ID) | (ids == PAD_ID)
    selected = (torch.rand(ids.shape, generator=g) < 0.3) & ~special
    labels = torch.where(selected, ids, torch.full_like(ids, IGNORE))
    decide = torch.rand(ids.shape, generator=g)
    masked = torch.where(selected & (decide < 0.8), torch.full_like(ids, MASK_ID), ids)
    masked = torch.where(selected & (decide >= 0.8) & (decide < 0.9), torch.randint(5, VOCAB, ids.shape, generator=g),
                         masked)
    return {"input_ids": masked, "attention_mask": attention, "mlm_labels": labels}


def run(objectives: Any, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
    return {name: objective(None, batch) for name, objective in objectives.items()}


def test_corruption_replaces_only_masked_positions_and_judges_only_real_tokens() -> None:
    _, objectives = build()
    batch = masked_batch()
    out = run(objectives, batch)
    corrupted, labels = batch[CORRUPTED], batch["mlm_labels"]
    selected = labels != IGNORE
    original = torch.where(selected, labels, batch["input_ids"])
    assert torch.equal(corrupted[~selected], original[~selected])  # padding, [CLS], [SEP], unmasked text kept
    assert not (corrupted == MASK_ID).any()  # the discriminator never sees [MASK]
    assert (corrupted[selected] != original[selected]).any()  # an untrained generator does replace tokens
    real = (batch["attention_mask"] == 1) & (original != CLS_ID) & (original != SEP_ID)
    assert len(out["rtd"].target) == int(real.sum()) == int(objectives["rtd"].count(batch))
    assert len(out["gen_mlm"].target) == int(selected.sum()) == int(objectives["gen_mlm"].count(batch))
    assert int(out["rtd"].target.sum()) == int((corrupted != original).sum())  # only masked positions can differ


def test_a_sample_equal_to_the_original_is_labelled_original() -> None:
    _, objectives = build()
    batch = masked_batch()
    selected = batch["mlm_labels"] != IGNORE
    generator = objectives["gen_mlm"].generator
    # a generator certain of the original token at every masked position: every sample equals it
    generator.forward = lambda b, s: torch.nn.functional.one_hot(b["mlm_labels"][s], VOCAB).float() * 1e4
    out = run(objectives, batch)
    assert torch.equal(batch[CORRUPTED][selected], batch["mlm_labels"][selected])
    assert int(out["rtd"].target.sum()) == 0 and len(out["rtd"].target) > 0


def test_gdes_rtd_loss_sends_no_gradient_into_the_generator_embedding() -> None:
    encoder, objectives = build("objective.rtd_sharing=gdes")
    gen_words = objectives["gen_mlm"].generator.encoder.embeddings.word_embeddings.weight
    batch = masked_batch()
    out = run(objectives, batch)
    out["rtd"].loss_sum.backward(retain_graph=True)
    assert gen_words.grad is None or not gen_words.grad.any()
    assert objectives["rtd"].deltas["word_embeddings"].grad.abs().sum() > 0  # the delta learns from RTD
    assert objectives["rtd"].deltas["position_embeddings"].grad.abs().sum() > 0
    out["gen_mlm"].loss_sum.backward()
    assert gen_words.grad.abs().sum() > 0  # the generator's MLM trains its embedding
    # the checkpoint's encoder.* holds the discriminator's embedding, E_G + delta, under the usual names
    with torch.no_grad():
        objectives["rtd"].deltas["word_embeddings"].add_(1.0)
    saved = encoder.state_dict()["embeddings.word_embeddings.weight"]
    torch.testing.assert_close(saved, gen_words.detach() + 1.0, rtol=0, atol=0)


def test_tied_embeddings_are_one_tensor_with_both_gradients() -> None:
    encoder, objectives = build("objective.rtd_sharing=tied")
    words = encoder.embeddings.word_embeddings.weight
    assert objectives["gen_mlm"].generator.encoder.embeddings.word_embeddings.weight is words
    out = run(objectives, masked_batch())
    out["rtd"].loss_sum.backward(retain_graph=True)
    from_rtd = words.grad.clone()
    out["gen_mlm"].loss_sum.backward()
    assert from_rtd.abs().sum() > 0 and not torch.equal(words.grad, from_rtd)


def step_gradients(micro: list[dict[str, torch.Tensor]], weight: float) -> dict[str, torch.Tensor]:
    """One step's gradients as PretrainModule.training_step forms them: each objective's loss sum over
    the whole step's count (train/pretrain.py _denominators), micro-batch by micro-batch."""
    encoder, objectives = build(f"objective.rtd_weight={weight}")
    params = dict(encoder.named_parameters()) | dict(objectives.named_parameters())
    counts = {n: sum(o.count(b) for b in micro).float() for n, o in objectives.items()}
    for part in micro:
        out = run(objectives, part)
        sum(objectives[n].weight * o.loss_sum / counts[n] for n, o in out.items()).backward()
    return {n: p.grad.clone() for n, p in params.items() if p.grad is not None}


def test_four_micro_batches_of_two_give_the_gradient_of_one_batch_of_eight() -> None:
    torch.manual_seed(7)  # the step seed: the salt of every draw in the step
    batch = masked_batch(seed=3)
    whole = step_gradients([batch], 50.0)
    torch.manual_seed(7)
    parts = step_gradients([{k: v[i:i + 2] for k, v in batch.items()} for i in range(0, 8, 2)], 50.0)
    assert whole.keys() == parts.keys() and len(whole) > 20
    for name in whole:
        torch.testing.assert_close(parts[name], whole[name], rtol=0, atol=1e-5, msg=name)


def test_draws_are_a_function_of_the_step_seed_and_the_example() -> None:
    """A resumed step (same seed) repeats its corruption; another step draws anew."""
    ids = masked_batch()["input_ids"]
    rows, positions = torch.tensor([0, 0, 5]), torch.tensor([3, 4, 7])
    first = uniforms(11, ids, rows, positions)
    assert torch.equal(first, uniforms(11, ids, rows, positions))
    assert not torch.equal(first, uniforms(12, ids, rows, positions))
    assert torch.equal(first[2:], uniforms(11, ids[5:6], rows[2:] * 0, positions[2:]))  # whatever the batch
    many = uniforms(11, ids, torch.arange(8).repeat_interleave(24), torch.arange(24).repeat(8))
    assert abs(float(many.mean()) - 0.5) < 0.05 and len(set(many.tolist())) == len(many)


@pytest.mark.parametrize("overrides, key", [
    (["objective.rtd_weight=0"], "objective.rtd_weight"),
    (["objective.rtd_generator_width=1.5"], "objective.rtd_generator_width"),
    (["objective.rtd_generator_depth=0"], "objective.rtd_generator_depth"),
    (["objective.sentence=nsp"], "objective.sentence"),
    (["objective.rtd_sharing=shared"], "objective.rtd_sharing"),
    (["trainer.max_flops=1e12", "trainer.max_tokens=1000"], "trainer.max_flops"),
])
def test_bad_rtd_settings_fail_in_one_line_naming_the_key(overrides: list[str], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        schema.load([*TINY_RTD, *overrides])
    assert key in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_rtd_run_stops_at_its_flop_budget_and_logs_no_canonical_mlm(tiny_overrides: list[str], tmp_path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """End to end, in-process: trainer.max_flops sets the step count (schedule and stop) from the host-side
    FLOPs of a step; an RTD run logs the generator's and the discriminator's metrics but no eval/*."""
    import json

    from conftest import call_main
    from lightning_bert.cli import train_main
    from lightning_bert.train.flops import step_flops

    overrides = [o for o in tiny_overrides if not o.startswith("trainer.max_steps")] + [
        "objective.lm=rtd", "run.name=rtd", "eval.probes=false", "trainer.max_flops=2.5e9"]
    code, err = call_main(capsys, train_main, overrides)
    assert code == 0, err[-2000:]
    run_dir = tmp_path / "runs" / "rtd"
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    vocab = ckpt["state_dict"]["encoder.embeddings.word_embeddings.weight"].shape[0]
    cfg = schema.load(overrides)
    summary = json.loads((run_dir / "summary.json").read_text())
    expected = -(-2.5e9 // step_flops(cfg, vocab))
    assert 1 < expected < 10 and summary["global_step"] == ckpt["global_step"] == expected
    metrics = set(summary["metrics"])
    assert {"val/rtd_acc", "val/rtd_loss", "val/gen_mlm_acc", "val/gen_mlm_loss"} <= metrics
    assert not any(k.startswith("eval/") for k in metrics) and "val/perplexity" not in metrics
