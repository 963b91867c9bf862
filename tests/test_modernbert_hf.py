"""ModernBERT interop: transformers' ModernBertForMaskedLM (a tiny random config built here, local and global
layers, a window shorter than the sentences) and our encoder give the same MLM logits on real text with padding,
in fp32, both ways: import (model.init_from: its weights into ours) and export (ours into it). Layouts with no
exact ModernBERT class are refused in one line naming the option."""
from pathlib import Path

import pytest
import torch

from conftest import TINY
from test_export import batch_for, make_checkpoint, ours, real_sentences
from test_import import imported

transformers = pytest.importorskip("transformers")

WINDOW = 8  # total window (|i - j| <= 4): shorter than every sentence, so local and global layers differ
# ModernBERT's layout in our options: 4 layers, global 0 and 3, local 1 and 2 (global_attn_every_n_layers=3)
MODERN = ["model.positions=rope", "model.rope_theta=160000", "model.local_rope_theta=10000", "model.ffn=geglu",
          "model.norm_position=pre", "model.first_attention_norm=false", "model.segment_embeddings=false",
          "model.attention_bias=false", "model.mlp_bias=false", "model.norm_bias=false", "model.head_bias=false",
          f"model.local_window={WINDOW}", "model.global_every=3", "model.num_layers=4"]
BIASES = ["model.attention_bias=true", "model.mlp_bias=true", "model.norm_bias=true", "model.head_bias=true"]


def their_model(tmp_path: Path, shared_data: Path, biases: bool) -> Path:
    """A ModernBertForMaskedLM made by transformers from a tiny random config (non-trivial norm gains and biases),
    saved with a WordPiece tokenizer trained on Wikipedia: what a hub ModernBERT directory holds. Sizes as TINY's;
    norm_eps as ours (1e-12): model.init_from carries no epsilon yet (ModelConfig has no layer_norm_eps)."""
    from lightning_bert.data.corpus import read_documents
    from lightning_bert.data.tokenizer import train_tokenizer
    from lightning_bert.hf.export import fast_tokenizer

    docs = read_documents([str(shared_data / "wikipedia-en" / "valid.txt")], "auto", "text")[:40]
    tok = train_tokenizer("wordpiece", docs, 1000)
    flags = dict(attention_bias=biases, mlp_bias=biases, norm_bias=biases, classifier_bias=biases)
    config = transformers.ModernBertConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, global_attn_every_n_layers=3, local_attention=WINDOW, max_position_embeddings=512,
        pad_token_id=0, cls_token_id=2, sep_token_id=3, bos_token_id=2, eos_token_id=3, norm_eps=1e-12, **flags)
    torch.manual_seed(0)
    model = transformers.ModernBertForMaskedLM(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                param.copy_(1 + 0.1 * torch.randn_like(param))
            elif name.endswith("bias"):
                param.copy_(0.05 * torch.randn_like(param))
    out = tmp_path / "modernbert"
    model.save_pretrained(out)
    fast_tokenizer(tok.to_str(), 512, ("input_ids", "attention_mask")).save_pretrained(out)
    return out


def their_logits(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Their logits at the real tokens, through their sparse prediction (labels mark the tokens to predict)."""
    mask = batch["attention_mask"].bool()
    labels = batch["input_ids"].masked_fill(~mask, -100)
    model.config.sparse_prediction = model.sparse_prediction = True
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).logits


def test_import_of_a_transformers_modernbert_gives_its_logits(tmp_path: Path, shared_data: Path) -> None:
    """model.init_from a ModernBERT directory (bias-free, as the released ones): the run's config takes its layout,
    our logits equal its. The biased layout's map is the same table (_names), checked by the export test."""
    biases = False
    hf_dir = their_model(tmp_path, shared_data, biases)
    module, cfg = imported(tmp_path, shared_data, [f"model.init_from={hf_dir}"])
    assert (cfg.model.positions, cfg.model.ffn, cfg.model.local_window, cfg.model.global_every) == ("rope", "geglu",
                                                                                                    WINDOW, 3)
    assert (cfg.model.rope_theta, cfg.model.local_rope_theta, cfg.model.norm_bias) == (160_000, 10_000, biases)
    model = transformers.AutoModelForMaskedLM.from_pretrained(hf_dir, attn_implementation="sdpa").eval()
    batch = batch_for(module.tokenizer_json, real_sentences(shared_data), pairs=False)
    mask = batch["attention_mask"].bool()
    assert mask.sum(1).min() > WINDOW // 2 + 1 and not mask.all()  # the window and the padding both matter
    with torch.no_grad():
        mine = module.objectives["mlm"].head(module(batch))[mask]
        torch.testing.assert_close(mine, their_logits(model, batch), atol=1e-5, rtol=0)


@pytest.mark.parametrize("extra", [[], BIASES], ids=["modernbert", "all_biases"])
def test_export_to_modernbert_gives_our_logits(extra: list[str], tmp_path: Path, shared_data: Path) -> None:
    """Our ModernBERT layout -> a directory transformers loads with its Auto classes and tokenizer; equal logits."""
    from lightning_bert.hf.export import export_dir

    ckpt = make_checkpoint(tmp_path, shared_data, MODERN + extra)
    export_dir(ckpt, tmp_path / "hf")
    model = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "hf", attn_implementation="sdpa").eval()
    assert type(model).__name__ == "ModernBertForMaskedLM" and model.config.layer_types == [
        "full_attention", "sliding_attention", "sliding_attention", "full_attention"]
    original = ours(ckpt)
    texts = real_sentences(shared_data)
    theirs_in = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")(texts, padding=True, return_tensors="pt")
    batch = batch_for(original.tokenizer_json, texts, pairs=False)
    assert set(theirs_in) == {"input_ids", "attention_mask"} and torch.equal(theirs_in["input_ids"], batch["input_ids"])
    mask = batch["attention_mask"].bool()
    with torch.no_grad():
        mine = original.objectives["mlm"].head(original(batch))[mask]
        torch.testing.assert_close(their_logits(model, dict(theirs_in)), mine, atol=1e-5, rtol=0)


@pytest.mark.parametrize("options, message", [
    (["model.norm=rmsnorm"], "model.norm=rmsnorm has no exact ModernBERT layout (ModernBertForMaskedLM uses LayerNorm; "
                             "NeoBERT has no transformers class)"),
    (["model.ffn=swiglu", "model.intermediate_size=192"],
     "model.ffn=swiglu has no transformers layout (NeoBERT has no transformers class; ModernBERT's is geglu)"),
    (["model.norm_position=post", "model.first_attention_norm=true"],
     "model.norm_position=post has no exact ModernBERT layout (ModernBertForMaskedLM has norm_position=pre)"),
    (["model.first_attention_norm=true"], "model.first_attention_norm=true has no exact ModernBERT layout "
                                          "(ModernBertForMaskedLM has first_attention_norm=false)"),
    (["model.segment_embeddings=true"], "model.segment_embeddings=true has no exact ModernBERT layout "
                                        "(ModernBertForMaskedLM has segment_embeddings=false)"),
], ids=["rmsnorm", "swiglu", "post_norm", "first_attention_norm", "segments"])
def test_layouts_without_a_modernbert_class_are_refused_in_one_line(options: list[str], message: str) -> None:
    from lightning_bert.config import load
    from lightning_bert.errors import UserError
    from lightning_bert.hf.registry import exporter
    from lightning_bert.train.checkpoint import encoder_config

    cfg = encoder_config(load(TINY + MODERN + options), 1000)
    with pytest.raises(UserError) as err:
        exporter(cfg).hf_config(cfg)
    assert str(err.value) == message


def test_the_registry_exports_rope_as_modernbert_and_learned_positions_as_bert() -> None:
    from lightning_bert.hf.registry import exporter
    from lightning_bert.model.config import EncoderConfig

    assert type(exporter(EncoderConfig(vocab_size=100))).__name__ == "BertFamilyAdapter"
    assert type(exporter(EncoderConfig(vocab_size=100, positions="rope"))).__name__ == "ModernBertAdapter"
