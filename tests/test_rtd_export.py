"""RTD export parity: the discriminator as ElectraForPreTraining (DebertaV2Model for disentangled attention),
the generator as ElectraForMaskedLM; equal outputs to 1e-5 in fp32 on tiny random weights."""
import pytest
import torch
import transformers
from omegaconf import OmegaConf

from lightning_bert import config as schema
from lightning_bert.hf.electra import (ElectraAdapter, deberta_discriminator_to_hf, generator_hf_config,
                                       generator_to_hf)
from lightning_bert.model.encoder import BertEncoder
from lightning_bert.objectives import build_objectives
from lightning_bert.train.checkpoint import encoder_config

VOCAB, BATCH, LENGTH = 300, 3, 20


def rtd_model(*overrides: str):
    cfg = schema.load(["objective.lm=rtd", "model.hidden_size=64", "model.intermediate_size=128", "model.num_heads=4",
                       "model.dropout=0", "model.attention_dropout=0", *overrides])
    torch.manual_seed(0)
    encoder = BertEncoder(encoder_config(cfg, VOCAB))
    objectives = build_objectives(OmegaConf.to_object(cfg), encoder)
    with torch.no_grad():  # random weights everywhere (LayerNorms and biases included), not the init
        for p in list(encoder.parameters()) + list(objectives.parameters()):
            p.add_(torch.randn_like(p) * 0.05)
    state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    state |= {f"objectives.{k}": v for k, v in objectives.state_dict().items()}
    return encoder, objectives, state


def inputs():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, VOCAB, (BATCH, LENGTH), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0
    segments = (torch.arange(LENGTH) >= 10).long().expand(BATCH, -1).contiguous()
    return ids, segments, mask


@pytest.mark.parametrize("overrides", [["objective.rtd_sharing=tied", "model.embedding_size=32"],
                                       ["objective.rtd_sharing=gdes", "objective.rtd_generator_width=1",
                                        "objective.rtd_generator_depth=0.5"]])
def test_electra_export_gives_equal_logits(overrides: list[str]) -> None:
    encoder, objectives, state = rtd_model(*overrides)
    cfg = encoder.config
    ids, segments, mask = inputs()
    real = mask.bool()
    disc = transformers.ElectraForPreTraining(ElectraAdapter().hf_config(cfg)).eval()
    disc.load_state_dict(ElectraAdapter().to_hf(state, cfg), strict=True)
    gen = transformers.ElectraForMaskedLM(generator_hf_config(state, cfg)).eval()
    gen.load_state_dict(generator_to_hf(state, cfg), strict=True)
    with torch.no_grad():
        ours = objectives["rtd"].head(encoder(ids, segments, mask))
        theirs = disc(input_ids=ids, token_type_ids=segments, attention_mask=mask).logits
        generator = objectives["gen_mlm"].generator
        ours_gen = generator.head(generator.encoder(ids, segments, mask))
        theirs_gen = gen(input_ids=ids, token_type_ids=segments, attention_mask=mask).logits
    disc_max = (ours - theirs)[real].abs().max().item()
    gen_max = (ours_gen - theirs_gen)[real].abs().max().item()
    print(f"parity {overrides}: discriminator {disc_max:.2e}, generator {gen_max:.2e}")
    assert disc_max < 1e-5 and gen_max < 1e-5


def test_disentangled_discriminator_exports_to_deberta_v2_model() -> None:
    encoder, _, state = rtd_model("model.attention=disentangled", "model.position_biased_input=false",
                                  "model.position_buckets=16", "objective.rtd_sharing=gdes",
                                  "objective.rtd_generator_width=1", "objective.rtd_generator_depth=0.5")
    cfg = encoder.config
    from lightning_bert.hf.deberta import DebertaV2Adapter

    model = transformers.DebertaV2Model(DebertaV2Adapter().hf_config(cfg)).eval()
    model.load_state_dict(deberta_discriminator_to_hf(state, cfg), strict=False)
    missing = [k for k in model.state_dict() if k not in deberta_discriminator_to_hf(state, cfg)]
    assert not [k for k in missing if not k.endswith("position_ids")], missing
    ids, segments, mask = inputs()
    with torch.no_grad():
        ours = encoder(ids, None, mask)
        theirs = model(input_ids=ids, attention_mask=mask).last_hidden_state
    worst = (ours - theirs)[mask.bool()].abs().max().item()
    print(f"parity disentangled discriminator: {worst:.2e}")
    assert worst < 1e-5


def test_electra_import_reads_the_discriminator_back() -> None:
    encoder, _, state = rtd_model("objective.rtd_sharing=tied")
    adapter = ElectraAdapter()
    back = adapter.from_hf(adapter.to_hf(state, encoder.config), encoder.config)
    for name, tensor in back.items():
        torch.testing.assert_close(tensor, state[name], rtol=0, atol=0, msg=name)
    assert {k for k in state if k.startswith("encoder.")} <= set(back)


@pytest.mark.parametrize("overrides, architecture", [
    (["objective.rtd_sharing=tied"], "ElectraForPreTraining"),
    (["model.attention=disentangled", "model.position_biased_input=false", "objective.rtd_sharing=gdes"],
     "DebertaV2Model")])
def test_export_of_an_rtd_checkpoint_writes_its_discriminator(overrides: list[str], architecture: str) -> None:
    from lightning_bert.hf.export import hf_model_from_checkpoint

    encoder, _, state = rtd_model(*overrides)
    model = hf_model_from_checkpoint({"state_dict": state}, encoder.config)
    assert type(model).__name__ == architecture
    ids, _, mask = inputs()
    with torch.no_grad():
        ours = encoder(ids, None, mask)
        theirs = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
    assert (ours - theirs)[mask.bool()].abs().max().item() < 1e-5
