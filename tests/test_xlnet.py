"""XLNet: relative attention, permutation data, two streams leak-free by autograd, parity with transformers'
XLNetLMHeadModel through hf/xlnet.py, the preset (train, resume, probes, fine-tuning), bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import GLUE_DIR, REPO
from lightning_bert import config
from lightning_bert.train.checkpoint import encoder_config
from lightning_bert.config import ConfigError
from lightning_bert.data.batch import collate_pretraining
from lightning_bert.data.datamodule import PretrainDataModule
from lightning_bert.data.masking import dynamic_rng, static_rng
from lightning_bert.data.permutation import permutation_example, sample_targets
from lightning_bert.data.tokenizer import CLS_ID, NUM_SPECIAL, PAD_ID, SEP_ID
from lightning_bert.hf.xlnet import XLNetAdapter
from lightning_bert.model.config import EncoderConfig
from lightning_bert.model.encoder import BertEncoder
from lightning_bert.model.relative import two_stream
from lightning_bert.objectives import PermutationLM, build_objectives

XLNET = XLNetAdapter()

VOCAB = 120


def tiny_model(layers: int = 2, embedding_size: int | None = None, seed: int = 0) -> tuple[BertEncoder, PermutationLM]:
    """A random fp32 encoder + PLM objective in eval mode, every weight (biases, norms, r_* biases) perturbed."""
    torch.manual_seed(seed)
    cfg = EncoderConfig(vocab_size=VOCAB, hidden_size=32, num_layers=layers, num_heads=4, intermediate_size=64,
                        embedding_size=embedding_size, attention="relative", position_biased_input=False)
    encoder = BertEncoder(cfg).eval()
    plm = PermutationLM(None, encoder).eval()
    with torch.no_grad():
        for p in list(encoder.parameters()) + [plm.mask_emb, plm.head.bias]:
            p.add_(torch.randn_like(p) * 0.1)
    return encoder, plm


def random_batch(seed: int = 0, batch: int = 3, length: int = 24, k: int = 4) -> dict[str, torch.Tensor]:
    """[CLS] A [SEP] B [SEP], two segments, the last row padded, targets drawn by data/permutation.py."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(NUM_SPECIAL, VOCAB, (batch, length), generator=gen)
    ids[:, 0], ids[:, length // 2], ids[:, -1] = CLS_ID, SEP_ID, SEP_ID
    types = torch.zeros(batch, length, dtype=torch.long)
    types[:, length // 2 + 1:] = 1
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[-1, length - 6:] = 0
    ids[-1, length - 7] = SEP_ID
    ids[-1, length - 6:] = PAD_ID
    rng = np.random.default_rng(seed)
    special = np.isin(ids.numpy(), [CLS_ID, SEP_ID])
    order = np.stack([permutation_example(ids[b].numpy(), special[b], k, 3, rng)["plm_order"] for b in range(batch)])
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask, "plm_order": torch.from_numpy(order)}


def model_state(encoder: BertEncoder, plm: PermutationLM) -> dict[str, torch.Tensor]:
    """PretrainModule's state-dict names."""
    return ({f"encoder.{k}": v for k, v in encoder.state_dict().items()}
            | {f"objectives.plm.{k}": v for k, v in plm.state_dict().items()})


# ------------------------------------------------------------------------------------------ parity


@pytest.mark.parametrize("layers, embedding_size", [(2, None), (3, 16)])
def test_parity_with_transformers_xlnet(layers: int, embedding_size: int | None) -> None:
    """Same weights (mapped by hf/xlnet.py, as export does), same perm_mask / target_mapping in XLNet's format:
    query-stream logits at the targets and content-stream states without permutation agree to 1e-5 (fp32)."""
    import transformers

    encoder, plm = tiny_model(layers, embedding_size)
    with torch.no_grad():  # XLNet has no input segment rows: equal rows make the fold into its word table exact
        encoder.embeddings.token_type_embeddings.weight[1] = encoder.embeddings.token_type_embeddings.weight[0]
    cfg = encoder.config
    theirs = transformers.XLNetLMHeadModel(XLNET.hf_config(cfg)).eval()
    missing, unexpected = theirs.load_state_dict(XLNET.to_hf(model_state(encoder, plm), cfg), strict=False)
    assert not missing and not unexpected
    b = random_batch(seed=layers)
    ids, types, mask, order = b["input_ids"], b["token_type_ids"], b["attention_mask"], b["plm_order"]
    with torch.no_grad():
        ours_h = encoder(ids, types, mask)
        their_h = theirs.transformer(ids, attention_mask=mask.float(), token_type_ids=types).last_hidden_state
        real = mask.bool()
        torch.testing.assert_close(ours_h[real], their_h[real], rtol=0, atol=1e-5)

        g, positions, valid = two_stream(encoder, ids, types, mask, order, plm.mask_emb)
        ours = plm.head(g)
        # XLNet's perm_mask[b, i, j] = 1: i may not attend to j (its content stream also sees itself)
        perm_mask = (order[:, None, :] >= order.clamp(min=1)[:, :, None]).float()
        mapping = torch.zeros(len(ids), positions.shape[1], ids.shape[1])
        mapping[torch.arange(len(ids))[:, None], torch.arange(positions.shape[1]), positions] = valid.float()
        their = theirs(ids, attention_mask=mask.float(), token_type_ids=types, perm_mask=perm_mask,
                       target_mapping=mapping).logits
    assert valid.sum() >= 6
    torch.testing.assert_close(ours[valid], their[valid], rtol=0, atol=1e-5)


def test_from_hf_inverts_to_hf_up_to_the_input_fold() -> None:
    encoder, plm = tiny_model()
    state = model_state(encoder, plm)
    back = XLNET.from_hf(XLNET.to_hf(state, encoder.config), encoder.config)
    for name, tensor in back.items():
        if not name.startswith("encoder.embeddings."):
            torch.testing.assert_close(tensor, state[name], rtol=0, atol=0, msg=name)
    assert torch.equal(back["encoder.embeddings.word_embeddings.weight"], state["encoder.embeddings.word_embeddings.weight"])


# ------------------------------------------------------------------------------------------ leak-freeness


def query_gradients(encoder: BertEncoder, plm: PermutationLM, batch: dict[str, torch.Tensor]):
    """Yield (row, target position, its order, grad of its query output wrt every input embedding [B, L, H])."""
    captured: list[torch.Tensor] = []
    hook = encoder.embeddings.register_forward_hook(lambda m, i, out: captured.append(out))
    g, positions, valid = two_stream(encoder, batch["input_ids"], batch["token_type_ids"], batch["attention_mask"],
                                     batch["plm_order"], plm.mask_emb)
    hook.remove()
    probe = torch.randn(g.shape[-1])  # a plain sum of a LayerNorm output has zero gradient everywhere
    for row, col in valid.nonzero().tolist():
        grad, = torch.autograd.grad((g[row, col] * probe).sum(), captured[0], retain_graph=True)
        pos = int(positions[row, col])
        yield row, pos, int(batch["plm_order"][row, pos]), grad


@pytest.mark.parametrize("layers", [2, 3])
def test_query_stream_is_leak_free_by_autograd(layers: int) -> None:
    """For every target t: d g_t / d embedding(j) is exactly 0 for t itself, every token at or after t in the
    factorisation order, and every other sequence; it is non-zero for earlier tokens (context and targets)."""
    encoder, plm = tiny_model(layers, seed=layers)
    batch = random_batch(seed=10 + layers)
    order, mask = batch["plm_order"], batch["attention_mask"].bool()
    checked, saw_earlier_target = 0, False
    for row, pos, rank, grad in query_gradients(encoder, plm, batch):
        moved = grad.abs().sum(-1)  # [B, L]
        hidden = (order[row] >= rank) | ~mask[row]
        assert moved[row, hidden].max() == 0, f"row {row}: target at {pos} sees its own or a later token"
        assert moved[torch.arange(len(order)) != row].max() == 0
        earlier = (order[row] < rank) & mask[row]
        assert (moved[row, earlier] > 0).all(), "an earlier token does not reach the target's query"
        saw_earlier_target |= bool(((order[row] > 0) & (order[row] < rank)).any())
        checked += 1
    assert checked >= 8 and saw_earlier_target


def test_special_and_context_tokens_never_see_targets() -> None:
    """transformers' collator masks only the target columns, so [CLS]/[SEP] see targets and pass their content
    on to the targets' queries one layer later. Here every context token's content (special ones included)
    is independent of every target's embedding, at the last layer."""
    encoder, plm = tiny_model(layers=2)
    batch = random_batch(seed=3)
    ids, order = batch["input_ids"], batch["plm_order"]
    captured: list[torch.Tensor] = []
    hook = encoder.embeddings.register_forward_hook(lambda m, i, out: captured.append(out))
    final: list[torch.Tensor] = []
    last = encoder.layers[-1].register_forward_hook(lambda m, i, out: final.append(out))
    two_stream(encoder, ids, batch["token_type_ids"], batch["attention_mask"], order, plm.mask_emb)
    hook.remove()
    last.remove()
    content = final[0][:, : ids.shape[1]]  # rows 0..L-1 of the last layer are the content stream
    context = (order == 0)
    assert context[ids == CLS_ID].all() and context[ids == SEP_ID].all()
    grad, = torch.autograd.grad((content * context[..., None] * torch.randn(content.shape[-1])).sum(), captured[0])
    assert grad.abs().sum(-1)[order > 0].max() == 0
    assert grad.abs().sum(-1)[context].min() > 0


def test_bfloat16_autocast_and_pure_bfloat16_track_fp32() -> None:
    encoder, plm = tiny_model()
    batch = random_batch()
    with torch.no_grad():
        reference = plm(None, batch).loss
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = plm(None, batch).loss
        encoder.to(torch.bfloat16), plm.to(torch.bfloat16)
        pure = plm(None, batch).loss
    assert abs(mixed - reference) < 0.05 * reference and abs(pure.float() - reference) < 0.05 * reference


def test_transformers_collator_masks_leak_without_its_mask_tokens(shared_data: Path) -> None:
    """The bug the masks above avoid: DataCollatorForPermutationLanguageModeling lets [CLS]/[SEP] see
    targets and every target see [CLS]/[SEP]. It hides this by feeding <mask> at the targets; with the
    paper's uncorrupted input, a target's query depends on its own token, two layers deep."""
    import transformers

    from lightning_bert.data.tokenizer import train_tokenizer
    from lightning_bert.hf.export import fast_tokenizer

    text = (shared_data / "wikitext-2-raw" / "wiki.valid.raw").read_text()[:60000]
    tokenizer = fast_tokenizer(train_tokenizer("wordpiece", [text], 800).to_str(), 64)
    lines = [line for line in text.splitlines() if len(line) > 300][:4]
    ids = [tokenizer(line, truncation=True, max_length=32)["input_ids"] for line in lines]
    torch.manual_seed(0)
    collated = transformers.DataCollatorForPermutationLanguageModeling(tokenizer)(ids)
    model = transformers.XLNetLMHeadModel(transformers.XLNetConfig(
        vocab_size=len(tokenizer), d_model=32, n_layer=2, n_head=4, d_inner=64, dropout=0.0)).eval()
    original = torch.tensor(ids)
    embeds = model.transformer.word_embedding(original).detach().requires_grad_(True)
    logits = model(inputs_embeds=embeds, perm_mask=collated["perm_mask"],
                   target_mapping=collated["target_mapping"]).logits
    leaks = 0
    for row, pos in (collated["labels"] != -100).nonzero().tolist():
        grad, = torch.autograd.grad(logits[row, pos].sum(), embeds, retain_graph=True)
        leaks += bool(grad[row, pos].abs().sum() > 0)
    assert leaks > 0


# ------------------------------------------------------------------------------------------ data


@pytest.fixture
def plm_overrides(tiny_overrides: list[str]) -> list[str]:
    return ["experiment=xlnet", *tiny_overrides]


@pytest.mark.parametrize("k", [6, 4])
def test_target_share_is_one_in_k_in_spans_never_special_or_padding(plm_overrides: list[str], k: int) -> None:
    data = PretrainDataModule(config.load(plm_overrides + [f"objective.plm_k={k}", "data.max_documents=20"]))
    data.setup()
    batch = collate_pretraining([data.train_set[i] for i in range(min(600, len(data.train_set)))])
    ids, order, mask = batch["input_ids"], batch["plm_order"], batch["attention_mask"]
    targets = order > 0
    candidates = (ids >= NUM_SPECIAL) & mask.bool()
    share = targets.sum().item() / candidates.sum().item()
    assert abs(share - 1 / k) < 0.01, share
    assert (ids[targets] >= NUM_SPECIAL).all() and mask[targets].bool().all()
    assert (order[~mask.bool()] == -1).all()
    for row in range(len(ids)):  # targets ranked 1..T, a permutation
        ranks = order[row][targets[row]].sort().values
        assert torch.equal(ranks, torch.arange(1, len(ranks) + 1))
    # spans: runs of adjacent targets are longer than independent picks would give (1 / (1 - 1/K))
    runs = np.diff(np.flatnonzero(np.diff(np.r_[0, targets.flatten().numpy().astype(int), 0])))[::2]
    assert runs.mean() > 1.4


def test_sample_targets_count_and_span_lengths() -> None:
    rng = np.random.default_rng(0)
    counts = [len(sample_targets(125, 5, 3, rng)) for _ in range(400)]
    assert set(counts) == {25} and len(sample_targets(3, 6, 5, rng)) <= 1


def test_dynamic_and_static_permutation_rules(plm_overrides: list[str]) -> None:
    """dynamic = f(seed, epoch, example): same after a restart, new each epoch; static = f(seed, duplicate,
    example): the same every epoch."""
    def dataset(extra: list[str]):
        data = PretrainDataModule(config.load(plm_overrides + ["data.max_documents=20", *extra]))
        data.setup()
        return data.train_set

    dynamic = dataset([])
    first = [dynamic[i]["plm_order"] for i in range(20)]
    restarted = dataset([])
    assert all(np.array_equal(a, restarted[i]["plm_order"]) for i, a in enumerate(first))
    restarted.epoch = 1
    assert sum(np.array_equal(a, restarted[i]["plm_order"]) for i, a in enumerate(first)) <= 1
    item = restarted.examples[5]
    from lightning_bert.data.examples import encode_example
    encoded = encode_example(restarted.corpus, item, restarted.max_seq_length)
    expected = permutation_example(encoded["input_ids"], encoded["special"], 6, 5, dynamic_rng(0, 1, 5))
    assert np.array_equal(restarted[5]["plm_order"], expected["plm_order"])

    static = dataset(["masking.mode=static", "masking.dupe_factor=2"])
    before = [static[i]["plm_order"] for i in range(20)]
    static.epoch = 3
    assert all(np.array_equal(a, static[i]["plm_order"]) for i, a in enumerate(before))
    duplicate, example = static._locate(len(static) - 1)
    assert duplicate == 1
    encoded = encode_example(static.corpus, static.examples[len(static) - 1], static.max_seq_length)
    expected = permutation_example(encoded["input_ids"], encoded["special"], 6, 5, static_rng(0, 1, example))
    assert np.array_equal(static[len(static) - 1]["plm_order"], expected["plm_order"])


# ------------------------------------------------------------------------------------------ config


def test_mlm_with_relative_attention_is_a_config_change() -> None:
    """The 2x2 objective x attention ablation: MLM runs on the relative encoder, PLM only there."""
    cfg = config.load(["model.attention=relative", "model.hidden_size=32", "model.intermediate_size=64"])
    encoder = BertEncoder(encoder_config(cfg, VOCAB))
    assert encoder.embeddings.position_embeddings is None  # relative kinds bring positions in through attention
    objectives = build_objectives(cfg, encoder)
    assert list(objectives) == ["mlm"]
    b = random_batch()
    labels = torch.where(b["plm_order"] > 0, b["input_ids"], -100)
    out = objectives["mlm"](encoder(b["input_ids"], b["token_type_ids"], b["attention_mask"]), {"mlm_labels": labels})
    out.loss.backward()
    assert encoder.layers[0].attention.r_r_bias.grad.abs().sum() > 0
    plm = config.load(["experiment=xlnet"])
    assert list(build_objectives(plm, encoder)) == ["plm"]


@pytest.mark.parametrize("overrides, message", [
    (["objective.lm=plm"], "objective.lm=plm needs model.attention=relative"),
    (["experiment=xlnet", "objective.sentence=nsp"], "objective.sentence=nsp is not allowed with objective.lm=plm"),
    (["experiment=xlnet", "objective.sentence=sop"], "objective.sentence=sop is not allowed with objective.lm=plm"),
    (["experiment=xlnet", "objective.plm_k=1"], "objective.plm_k=1 is out of range; it must be in [2, 64]"),
    (["experiment=xlnet", "objective.plm_max_span=0"], "objective.plm_max_span=0 is out of range"),
    (["experiment=xlnet", "data.max_seq_length=20"], "data.max_seq_length=20 is out of range; it must be >= 4 * "),
    (["model.attention=relative", "model.hidden_size=33", "model.num_heads=1"], "model.hidden_size=33 is odd"),
    (["experiment=xlnet", "objective.lm=xl"], "objective.lm='xl' is not allowed; choose one of mlm, plm"),
])
def test_bad_input_is_one_line(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.load(overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("overrides", [["objective.lm=plm"], ["experiment=xlnet", "objective.sentence=nsp"]])
def test_train_exits_2_with_one_line(overrides: list[str]) -> None:
    proc = subprocess.run([sys.executable, "train.py", *overrides], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "objective." in proc.stderr


# ------------------------------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_preset_trains_resumes_and_its_checkpoint_serves_probes_and_finetuning(
        plm_overrides: list[str], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from lightning_bert.eval import finetune, probes

    env = {**os.environ, "WANDB_MODE": "disabled"}
    overrides = plm_overrides + ["run.name=xl", "data.valid_fraction=0.1"]
    for steps, resume in ((4, []), (6, ["run.resume=auto", "run.resume_force=true"])):  # resumed run continues to step 6
        proc = subprocess.run([sys.executable, "train.py", *overrides, f"trainer.max_steps={steps}", *resume],
                              cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        summary = json.loads((tmp_path / "runs" / "xl" / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["global_step"] == steps
    metrics = summary["metrics"]
    assert {"val/plm_loss", "val/plm_acc", "val/perplexity", "train/plm_loss"} <= set(metrics)
    assert not any(k.startswith(("val/mlm", "train/mlm")) for k in metrics)
    assert 0 < metrics["val/plm_loss"] < 12 and all(v == v for v in metrics.values())
    ckpt = tmp_path / "runs" / "xl" / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    assert "objectives.plm.mask_emb" in state and "encoder.layers.0.attention.r_r_bias" in state

    capsys.readouterr()
    assert probes.main([str(ckpt), *overrides, "max_examples=200"]) == 0  # content stream, unchanged
    scores = [line.split("\t") for line in capsys.readouterr().out.strip().splitlines()]
    assert scores and all(name.startswith("probe/") and 0 <= float(v) <= 1 for name, v, *_ in scores)
    out = tmp_path / "glue.json"
    assert finetune.main([f"ckpt={ckpt}", "tasks=[mrpc]", "seeds=1", "max_train_examples=64", "epochs=1", "sts=true",
                          f"glue_dir={GLUE_DIR}", f"output={out}", "progress=false", "accelerator=cpu"]) == 0
    result = json.loads(out.read_text())["summary"]
    assert 0 <= result["glue/mrpc/acc"] <= 1 and -1 <= result["sts/mean/spearman"] <= 1
