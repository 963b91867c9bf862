"""DeBERTa: parity with transformers' DebertaV2 through hf/deberta.py, the enhanced mask decoder against
the paper's equations, ablations, padding, config errors, and the preset end to end (train, resume,
probes, GLUE fine-tuning, STS embeddings) on real data."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_bert import config
from lightning_bert.config import ATTENTION_KINDS, ConfigError
from lightning_bert.hf.deberta import DebertaV2Adapter
from lightning_bert.model.attention import ATTENTIONS
from lightning_bert.model.config import EncoderConfig
from lightning_bert.model.disentangled import DisentangledAttention, EnhancedMaskDecoder, RelativePositions, log_bucket
from lightning_bert.model.encoder import BertEncoder, Block
from lightning_bert.model.positions import POSITIONS
from lightning_bert.objectives import build_objectives
from conftest import GLUE_DIR, REPO

DEBERTA = DebertaV2Adapter()

transformers = pytest.importorskip("transformers")


def tiny_cfg(**kw) -> EncoderConfig:
    base = dict(vocab_size=60, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, dropout=0.0,
                attention_dropout=0.0, max_position_embeddings=32, attention="disentangled", layer_norm_eps=1e-7)
    return EncoderConfig(**{**base, **kw})


def batch(seed: int = 0, length: int = 20) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 60, (3, length), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 13:] = 0
    mask[2, 5:] = 0
    return ids.masked_fill(mask == 0, 0), torch.randint(0, 2, ids.shape, generator=g), mask


def randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Weights far from the N(0, 0.02) init, so the position terms weigh as much as content."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            norm = "LayerNorm" in name or ".norm" in name or name.endswith("_norm.weight") or "_norm." in name
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if norm else 0.2) + (1.0 if norm and name.endswith("weight") else 0.0))


def test_attention_kind_and_position_scheme_are_registered() -> None:
    assert "disentangled" in ATTENTION_KINDS and ATTENTIONS["disentangled"] is DisentangledAttention
    assert POSITIONS[DisentangledAttention.position_schemes[0]] is RelativePositions
    assert set(ATTENTION_KINDS) >= set(ATTENTIONS)


def test_log_buckets_match_transformers() -> None:
    from transformers.models.deberta_v2.modeling_deberta_v2 import make_log_bucket_position

    distances = torch.arange(-700, 701)
    for buckets, max_position in ((256, 512), (8, 16), (32, 128), (6, 9)):
        ours = log_bucket(distances, buckets, max_position)
        assert torch.equal(ours, make_log_bucket_position(distances, buckets, max_position).long())
        assert torch.equal(ours[700: 700 + buckets // 2], torch.arange(buckets // 2))  # exact near zero
        assert torch.equal(ours, -ours.flip(0))  # odd in the distance


CASES = {  # id: EncoderConfig overrides
    "v2-exact-separate-keys-abs-input": dict(position_buckets=0, max_relative_positions=6, share_att_key=False,
                                              position_biased_input=True),
    "v3-buckets-shared-keys-no-abs": dict(position_buckets=8, max_relative_positions=16, share_att_key=True,
                                          position_biased_input=False),
    "exact-shared-keys-no-abs": dict(position_buckets=0, max_relative_positions=-1, share_att_key=True,
                                     position_biased_input=False),
    "buckets-separate-keys-abs-input": dict(position_buckets=8, max_relative_positions=16, share_att_key=False,
                                            position_biased_input=True),
    "c2p-only": dict(position_buckets=8, max_relative_positions=16, share_att_key=False, pos_att_type=("c2p",),
                     position_biased_input=False),
    "p2c-only": dict(position_buckets=0, max_relative_positions=6, share_att_key=True, pos_att_type=("p2c",),
                     position_biased_input=False),
    "c2c-only": dict(pos_att_type=(), position_biased_input=True),
}


def paired(cfg: EncoderConfig) -> tuple[torch.nn.Module, torch.nn.ModuleDict]:
    """A random DebertaV2ForMaskedLM and our encoder + MLM objective holding the same weights."""
    torch.manual_seed(0)
    theirs = transformers.DebertaV2ForMaskedLM(DEBERTA.hf_config(cfg)).eval()
    randomize(theirs)
    encoder = BertEncoder(cfg)
    ours = torch.nn.ModuleDict({"encoder": encoder, "objectives": build_objectives(config.load(), encoder)}).eval()
    ours.load_state_dict(DEBERTA.from_hf(theirs.state_dict(), cfg), strict=True)
    return theirs, ours


@pytest.mark.parametrize("case", CASES)
def test_hidden_states_and_mlm_logits_equal_transformers(case: str) -> None:
    cfg = tiny_cfg(**CASES[case])
    theirs, ours = paired(cfg)
    ids, types, mask = batch()
    with torch.no_grad():
        ref = theirs(input_ids=ids, token_type_ids=types, attention_mask=mask, output_hidden_states=True)
        hidden = ours["encoder"](ids, types, mask)
        real = mask.bool()
        assert (hidden[real] - ref.hidden_states[-1][real]).abs().max() < 1e-5
        logits = ours["objectives"]["mlm"].head(hidden[real])
        assert (logits - ref.logits[real]).abs().max() < 1e-5
    assert ref.hidden_states[-1][real].std() > 0.5  # not a degenerate comparison


def test_gradients_equal_transformers() -> None:
    cfg = tiny_cfg(**CASES["v3-buckets-shared-keys-no-abs"])
    theirs, ours = paired(cfg)
    ids, types, mask = batch(1)
    weight = torch.randn(3, 20, 32, generator=torch.Generator().manual_seed(2))
    real = mask.bool()[..., None]
    (theirs.deberta(input_ids=ids, token_type_ids=types, attention_mask=mask).last_hidden_state * weight * real).sum().backward()
    (ours["encoder"](ids, types, mask) * weight * real).sum().backward()
    grads = DEBERTA.from_hf({k: p.grad for k, p in theirs.named_parameters() if p.grad is not None}, cfg)
    mine = dict(ours.named_parameters())
    checked = 0
    for name, grad in grads.items():
        if name.startswith("encoder.") and not name.endswith("word_embeddings.weight"):
            assert torch.allclose(mine[name].grad, grad, atol=1e-5, rtol=1e-4), name
            checked += 1
    assert checked > 30 and mine["encoder.positions.embeddings.weight"].grad.abs().sum() > 0


@pytest.mark.parametrize("case", ["v2-exact-separate-keys-abs-input", "v3-buckets-shared-keys-no-abs", "c2p-only"])
def test_weight_map_round_trips(case: str) -> None:
    cfg = tiny_cfg(**CASES[case])
    theirs = transformers.DebertaV2ForMaskedLM(DEBERTA.hf_config(cfg)).state_dict()
    back = DEBERTA.to_hf(DEBERTA.from_hf(theirs, cfg), cfg)
    assert set(back) == set(theirs)
    assert all(torch.equal(back[k], theirs[k]) for k in theirs)
    hf = DEBERTA.hf_config(cfg).to_dict()  # config.json -> the same EncoderConfig (import)
    assert EncoderConfig(**{**DEBERTA.encoder_kwargs(hf), "pad_token_id": cfg.pad_token_id}) == cfg
    base = transformers.DebertaV2Model(DEBERTA.hf_config(cfg)).state_dict()  # a bare base model loads too
    assert set(DEBERTA.from_hf(base, cfg)) == {k for k in DEBERTA.from_hf(theirs, cfg) if k.startswith("encoder.")}


def test_export_refuses_what_debertav2_cannot_compute() -> None:
    from lightning_bert.errors import UserError

    for kw, message in ((dict(norm_position="pre"), "norm_position=pre"), (dict(embedding_size=16), "embedding_size"),
                        (dict(attention="absolute"), "attention=absolute")):
        with pytest.raises(UserError, match=message):
            DEBERTA.hf_config(tiny_cfg(**kw))


# --- the enhanced mask decoder against the paper's equations (He et al. 2021, eq. 4-5 and section 3.2) ---

def reference_layer(block: Block, rel: Tensor, k: int, keys: Tensor, queries: Tensor, query_pos: Tensor,
                    key_mask: Tensor) -> Tensor:
    """One post-LN layer written out from the paper, token by token: for query i and key j,
    A_ij = Qc_i.Kc_j + Qc_i.Kr_d(i,j) + Kc_j.Qr_d(i,j), d(i,j) = clamp(i - j, -k, k - 1) + k, softmax of
    A / sqrt(3d) over real keys, then W_o, residual + LayerNorm, FFN, residual + LayerNorm.
    (Eq. 4 writes d(j,i) in the p2c term; the authors' code and transformers use d(i,j), as here.)"""
    att = block.attention
    heads, d = att.num_heads, keys.shape[-1] // att.num_heads
    split = lambda x: x.view(*x.shape[:-1], heads, d)  # noqa: E731
    qc, kc, vc = split(att.query(queries)), split(att.key(keys)), split(att.value(keys))
    qr, kr = split(att.query(rel)), split(att.key(rel))  # share_att_key: the content projections
    out = torch.zeros(queries.shape[0], queries.shape[1], heads, d)
    for b in range(keys.shape[0]):
        for i in range(queries.shape[1]):
            for h in range(heads):
                scores = []
                for j in range(keys.shape[1]):
                    r = min(max(int(query_pos[b, i]) - j, -k), k - 1) + k
                    a = qc[b, i, h] @ kc[b, j, h] + qc[b, i, h] @ kr[r, h] + kc[b, j, h] @ qr[r, h]
                    scores.append(a / math.sqrt(3 * d) if key_mask[b, j] else torch.tensor(-math.inf))
                out[b, i, h] = torch.softmax(torch.stack(scores), 0) @ vc[b, :, h]
    y = block.attention_norm(queries + att.out(out.flatten(-2)))
    return block.ffn_norm(y + block.ffn.down(F.gelu(block.ffn.up(y))))


def emd_setup(**kw) -> tuple[BertEncoder, EnhancedMaskDecoder]:
    torch.manual_seed(0)
    cfg = tiny_cfg(hidden_size=16, num_heads=2, max_relative_positions=5, position_biased_input=False, **kw)
    encoder = BertEncoder(cfg).eval()
    randomize(encoder, 3)
    emd = EnhancedMaskDecoder(encoder).eval()
    with torch.no_grad():
        emd.position_embeddings.weight.normal_(0, 1.0)
    return encoder, emd


def test_emd_follows_the_papers_equations() -> None:
    encoder, emd = emd_setup()
    ids, types, mask = batch(length=9)
    selected = torch.zeros_like(mask, dtype=torch.bool)
    selected[0, [1, 6]] = selected[1, [2, 3, 8]] = selected[2, 4] = True  # [1, 8] is padding: ignored
    selected &= mask.bool()
    rel = encoder.positions.norm(encoder.positions.embeddings.weight)
    last, k = encoder.layers[-1], 5
    with torch.no_grad():
        layers = encoder(ids, types, mask, output_layers=True)
        got = emd(layers, selected, ids, types, mask)
        positions = torch.arange(9).expand(3, 9)
        # the encoder itself: its last layer from the layer below
        expect_last = reference_layer(last, rel, k, layers[-2], layers[-2], positions, mask.bool())
        assert torch.allclose(layers[-1][mask.bool()], expect_last[mask.bool()], atol=1e-5)
        # EMD: queries = absolute positions + h_{N-1}; keys/values h_{N-1}; the last layer twice
        query = layers[-2] + emd.position_embeddings.weight[:9]
        for _ in range(2):
            query = reference_layer(last, rel, k, layers[-2], query, positions, mask.bool())
    assert got.shape == (int(selected.sum()), 16)
    assert torch.allclose(got, query[selected], atol=1e-5)
    assert not torch.allclose(got, layers[-1][selected], atol=1e-2)


def test_only_emd_logits_see_absolute_positions() -> None:
    """Left padding moves every token 4 places along while keeping the distances between them: the plain
    head on a model without absolute input positions cannot tell; EMD's logits change."""
    cfg = config.load(["model.attention=disentangled", "objective.emd=true"])
    torch.manual_seed(0)
    encoder = BertEncoder(tiny_cfg(position_biased_input=False, max_relative_positions=8)).eval()
    mlm = build_objectives(cfg, encoder)["mlm"].eval()
    randomize(mlm)  # the EMD position table (and head) as trained ones would be, not at N(0, 0.02)
    tokens = torch.randint(5, 60, (8,), generator=torch.Generator().manual_seed(0))
    ids = torch.zeros(2, 12, dtype=torch.long)
    ids[0, :8], ids[1, 4:] = tokens, tokens
    mask = (ids != 0).long()
    selected = torch.zeros(2, 12, dtype=torch.bool)
    selected[0, 3] = selected[1, 7] = True
    with torch.no_grad():
        layers = encoder(ids, None, mask, output_layers=True)
        plain = mlm.head(layers[-1][selected])
        decoded = mlm.head(mlm.emd(layers, selected, ids, None, mask))
    assert torch.allclose(plain[0], plain[1], atol=1e-5)
    assert (decoded[0] - decoded[1]).abs().max() > 1e-2


def test_emd_composes_with_sharing_pre_ln_and_bf16() -> None:
    cfg = config.load(["model.attention=disentangled", "objective.emd=true"])
    for kw in (dict(share_layers="all"), dict(norm_position="pre"), dict(share_layers="attention", norm_position="pre")):
        torch.manual_seed(0)
        encoder = BertEncoder(tiny_cfg(position_biased_input=False, position_buckets=8, max_relative_positions=16, **kw))
        mlm = build_objectives(cfg, encoder)["mlm"]
        ids, types, mask = batch()
        labels = torch.full_like(ids, -100)
        labels[0, 2], labels[1, 7], labels[2, 1] = 5, 6, 7
        data = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask, "mlm_labels": labels}
        for dtype in (torch.float32, torch.bfloat16):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                layers = encoder(ids, types, mask, output_layers=True)
                out = mlm(layers[-1], data, layers)
            out.loss.backward()
            assert torch.isfinite(out.loss) and len(out.target) == 3
            assert mlm.emd.position_embeddings.weight.grad.abs().sum() > 0
            assert encoder.layers[-1].attention.query.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", sorted(ATTENTIONS))
def test_emd_trains_on_every_attention_kind(kind: str) -> None:
    """The sweep's absolute + EMD control, and relative attention (whose scheme decodes every row)."""
    cfg = config.load([f"model.attention={kind}", "objective.emd=true"])
    torch.manual_seed(0)
    encoder = BertEncoder(tiny_cfg(attention=kind, position_biased_input=kind == "absolute"))
    mlm = build_objectives(cfg, encoder)["mlm"]
    ids, types, mask = batch()
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 7], labels[1, 9], labels[2, 1] = 5, 6, 8, 7
    data = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask, "mlm_labels": labels}
    layers = encoder(ids, types, mask, output_layers=True)
    out = mlm(layers[-1], data, layers)
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.target.tolist() == [5, 6, 8, 7]
    assert mlm.emd.position_embeddings.weight.grad[[2, 7, 9, 1]].abs().sum(-1).min() > 0


# --- ablations and padding ---

def test_c2p_and_p2c_ablations_change_the_output() -> None:
    ids, types, mask = batch()
    outputs = {}
    state = None
    for terms in (("c2p", "p2c"), ("c2p",), ("p2c",), ()):
        torch.manual_seed(0)
        encoder = BertEncoder(tiny_cfg(pos_att_type=terms, position_biased_input=False)).eval()
        if state is None:
            randomize(encoder)
            state = encoder.state_dict()
        encoder.load_state_dict(state)  # the same weights: share_att_key adds none per term
        with torch.no_grad():
            outputs[terms] = encoder(ids, types, mask)[mask.bool()]
    names = list(outputs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert (outputs[a] - outputs[b]).abs().max() > 1e-2, (a, b)


@pytest.mark.parametrize("buckets", [0, 8])
def test_padding_does_not_change_real_token_outputs(buckets: int) -> None:
    torch.manual_seed(0)
    encoder = BertEncoder(tiny_cfg(position_buckets=buckets, max_relative_positions=16, position_biased_input=False)).eval()
    randomize(encoder)
    cfg = config.load(["model.attention=disentangled", "objective.emd=true"])
    mlm = build_objectives(cfg, encoder)["mlm"].eval()
    ids = torch.randint(1, 60, (2, 10), generator=torch.Generator().manual_seed(4))
    padded = torch.cat([ids, torch.zeros(2, 7, dtype=torch.long)], 1)
    selected = torch.zeros(2, 10, dtype=torch.bool)
    selected[0, 3] = selected[1, [0, 9]] = True
    with torch.no_grad():
        short = encoder(ids, None, torch.ones_like(ids), output_layers=True)
        long = encoder(padded, None, (padded != 0).long(), output_layers=True)
        assert torch.allclose(short[-1], long[-1][:, :10], atol=1e-5)
        emd_short = mlm.emd(short, selected, ids, None, torch.ones_like(ids))
        emd_long = mlm.emd(long, F.pad(selected, (0, 7)), padded, None, (padded != 0).long())
    assert torch.allclose(emd_short, emd_long, atol=1e-5)


def test_relative_context_for_query_subsets_matches_the_full_one() -> None:
    positions = RelativePositions(tiny_cfg(position_buckets=8, max_relative_positions=16))
    full = positions(torch.zeros(1, 12, dtype=torch.long))
    rows = torch.tensor([[0, 5, 11], [2, 3, 3]])
    part = positions.at(rows, 12)
    assert torch.equal(part.embeddings, full.embeddings)
    assert torch.equal(part.index, full.index[0][rows])
    # only the reachable rows of the 16-row table are kept: distances up to 11 -> buckets -7..7
    assert full.embeddings.shape[0] == 15 and positions.embeddings.weight.shape[0] == 16


# --- config and CLI ---

D = "model.attention=disentangled"


@pytest.mark.parametrize("overrides, message", [
    ([D, "model.position_buckets=0"], "model.position_buckets=0 is out of range; it must be a positive count"),
    ([D, "model.position_buckets=-3"], "model.position_buckets=-3 is out of range"),
    ([D, "model.max_relative_positions=4096"], "model.max_relative_positions=4096 is larger than the sequence allows"),
    ([D, "model.max_relative_positions=0"], "model.max_relative_positions=0 is out of range"),
    ([D, "model.max_relative_positions=64", "model.position_buckets=256"], "model.position_buckets=256 is too many"),
    ([D, "model.pos_att_type=[c2p,p2p]"], "model.pos_att_type='p2p' is not allowed; choose one of c2p, p2c"),
    ([D, "model.pos_att_type=[c2p,c2p]"], "repeats a term"),
    (["model.position_biased_input=false"], "model.position_biased_input=false leaves model.attention=absolute"),
    (["model.attention=relative", "objective.lm=plm", "objective.emd=true"], "objective.emd=true is not allowed"),
])
def test_bad_deberta_config_is_one_line(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.load(overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_preset_defaults() -> None:
    cfg = config.load(experiment="deberta")
    assert (cfg.model.attention, cfg.model.position_buckets, cfg.model.share_att_key, cfg.objective.emd,
            cfg.objective.sentence, cfg.masking.mode) == ("disentangled", 256, True, True, "none", "dynamic")
    assert config.ModelConfig(attention="disentangled").biased_input() is False
    assert config.ModelConfig().biased_input() is True


@pytest.mark.parametrize("args, message", [
    (["model.attention=bogus"], "model.attention='bogus' is not allowed; choose one of absolute, disentangled"),
    (["experiment=deberta", "model.position_buckets=0"], "model.position_buckets=0 is out of range"),
    (["experiment=deberta", "model.max_relative_positions=100000"], "larger than the sequence allows"),
    (["experiment=deberta", "objective.lm=plm"], "objective.lm=plm needs model.attention=relative"),
])
def test_cli_bad_input_exits_2_with_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "train.py", *args, f"run.output_dir={tmp_path}"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert not (tmp_path / "runs").exists() and not list(tmp_path.iterdir())  # before any data work


# --- the preset end to end on real data ---

@pytest.mark.slow
def test_preset_trains_resumes_and_feeds_probes_finetuning_and_embeddings(tiny_overrides: list[str],
                                                                          tmp_path: Path) -> None:
    from lightning_bert.eval.finetune import main as finetune

    overrides = tiny_overrides + ["experiment=deberta", "run.name=d", "data.valid_fraction=0.1"]
    first = subprocess.run([sys.executable, "train.py", *overrides], cwd=REPO, capture_output=True, text=True,
                           timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = tmp_path / "runs" / "d"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["global_step"] == 4
    assert 0 < summary["metrics"]["val/mlm_loss"] < 20 and "probe/nsp_acc" in summary["metrics"]
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert "objectives.mlm.emd.position_embeddings.weight" in state
    assert "encoder.positions.embeddings.weight" in state and "encoder.embeddings.position_embeddings.weight" not in state
    assert state["encoder.positions.embeddings.weight"].shape[0] == 512  # 256 buckets a side

    second = subprocess.run([sys.executable, "train.py", *overrides, "trainer.max_steps=6", "run.resume=auto",
                             "run.resume_force=true"],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    resumed = json.loads((run_dir / "summary.json").read_text())
    assert resumed["status"] == "finished" and resumed["global_step"] == 6
    assert resumed["tokens_seen"] > summary["tokens_seen"]  # continued from step 4, not restarted

    out = tmp_path / "glue.json"
    argv = [f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}", "tasks=[rte]", "seeds=1", "max_train_examples=32",
            "epochs=1", "sts=true", f"glue_dir={GLUE_DIR}", f"output={out}", "progress=false", "accelerator=cpu"]
    assert finetune(argv) == 0
    result = json.loads(out.read_text())["summary"]
    assert {"glue/rte/acc", "sts/mean/spearman", "sts/cls_norm/anisotropy"} <= set(result)
    assert all(math.isfinite(v) for v in result.values())
