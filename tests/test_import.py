"""model.init_from=DIR: a transformers directory (ours exported, or made by transformers itself) initialises
pretraining with identical outputs; contradicting overrides and bad directories stop with one line."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO, TINY, call_main
from test_export import batch_for, export, make_checkpoint, ours, real_sentences

transformers = pytest.importorskip("transformers")


def data_overrides(tmp_path: Path, shared_data: Path) -> list[str]:
    return [f"data.path={shared_data / 'wikipedia-en' / 'valid.txt'}", "data.max_documents=30",
            f"data.cache_dir={tmp_path / 'cache'}", f"run.output_dir={tmp_path / 'runs'}"]


def imported(tmp_path: Path, shared_data: Path, overrides: list[str]):
    """(PretrainModule initialised from model.init_from, its config) the way fit.run does it."""
    from lightning_bert.config import load, to_dict
    from lightning_bert.export import init_from
    from lightning_bert.train.pretrain import PretrainModule

    cfg = load([o for o in TINY if not o.startswith("tokenizer.")] + data_overrides(tmp_path, shared_data) + overrides)
    init = init_from(cfg)
    module = PretrainModule(to_dict(cfg), init.tokenizer.get_vocab_size(), init.tokenizer.to_str())
    init.load_into(module)
    return module.eval(), cfg


@pytest.mark.parametrize("overrides", [["objective.sentence=nsp"],
                                       ["objective.sentence=sop", "model.embedding_size=32", "model.share_layers=all"],
                                       ["model.norm_position=pre"], ["experiment=deberta"]],
                         ids=["bert", "albert", "pre_ln", "deberta"])
def test_export_then_import_gives_identical_logits(overrides: list[str], tmp_path: Path, shared_data: Path) -> None:
    ckpt = make_checkpoint(tmp_path, shared_data, overrides)
    assert export(ckpt, tmp_path / "hf").returncode == 0
    sentence = [o for o in overrides if o.startswith("objective.")]  # the directory decides the rest
    sentence += ["objective.emd=true"] if "experiment=deberta" in overrides else []
    module, cfg = imported(tmp_path, shared_data, [f"model.init_from={tmp_path / 'hf'}"] + sentence)
    original = ours(ckpt)
    assert module.tokenizer_json and module.encoder.config == original.encoder.config
    assert cfg.model.hidden_size == 64 and cfg.model.num_layers == original.encoder.config.num_layers
    batch = batch_for(original.tokenizer_json, real_sentences(shared_data), pairs=True)
    with torch.no_grad():
        mine, theirs = module(batch), original(batch)
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=0)
        torch.testing.assert_close(module.objectives["mlm"].head(mine), original.objectives["mlm"].head(theirs),
                                   atol=1e-5, rtol=0)
        for pair in set(module.objectives) & {"nsp", "sop"}:
            torch.testing.assert_close(module.objectives[pair].head(mine), original.objectives[pair].head(theirs),
                                       atol=1e-5, rtol=0)


def foreign_tokenizer(tmp_path: Path, shared_data: Path, kind: str, names: dict[str, str], front: int) -> Path:
    """A fast tokenizer as another library would ship it: special tokens named `names` and placed after
    `front` ordinary tokens (bert-base-uncased has [UNK]=100, [CLS]=101 ...), saved by transformers."""
    from lightning_bert.data.corpus import read_documents
    from lightning_bert.data.tokenizer import SPECIAL_TOKENS, train_tokenizer

    docs = read_documents([str(shared_data / "wikipedia-en" / "valid.txt")], "auto", "text")[:40]
    tj = json.loads(train_tokenizer(kind, docs, 600).to_str())
    model = tj["model"]
    rename = {ours: names.get(ours, ours) for ours in SPECIAL_TOKENS}
    if kind == "unigram":
        pieces = [[rename.get(p, p), s] for p, s in model["vocab"]]
        specials, rest = pieces[1:len(SPECIAL_TOKENS)], [pieces[0]] + pieces[len(SPECIAL_TOKENS):]  # [PAD] stays 0
        model["vocab"] = rest[:front] + specials + rest[front:]
        model["unk_id"] = [p for p, _ in model["vocab"]].index(rename["[UNK]"])
        order = [p for p, _ in model["vocab"]]
    else:
        order = sorted(model["vocab"], key=model["vocab"].get)
        order = [rename.get(t, t) for t in order]
        specials, rest = order[1:len(SPECIAL_TOKENS)], [order[0]] + order[len(SPECIAL_TOKENS):]
        order = rest[:front] + specials + rest[front:]
        model["vocab"] = {t: i for i, t in enumerate(order)}
        model["unk_token"] = rename["[UNK]"]
    tj["added_tokens"] = [{"id": order.index(rename[t]), "content": rename[t], "single_word": False, "lstrip": False,
                           "rstrip": False, "normalized": False, "special": True} for t in SPECIAL_TOKENS]
    from tokenizers import Tokenizer, processors

    foreign = Tokenizer.from_str(json.dumps(tj))
    cls, sep = rename["[CLS]"], rename["[SEP]"]
    foreign.post_processor = processors.BertProcessing((sep, order.index(sep)), (cls, order.index(cls)))
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=foreign, pad_token=rename["[PAD]"], unk_token=rename["[UNK]"],
        cls_token=rename["[CLS]"], sep_token=rename["[SEP]"], mask_token=rename["[MASK]"])
    out = tmp_path / "foreign"
    tok.save_pretrained(out)
    return out


@pytest.mark.parametrize("arch", ["bert", "albert"])
def test_random_transformers_model_imports_with_identical_outputs(arch: str, tmp_path: Path,
                                                                   shared_data: Path) -> None:
    if arch == "bert":
        out = foreign_tokenizer(tmp_path, shared_data, "wordpiece", {}, front=100)
        config = transformers.BertConfig(vocab_size=600, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=128)
        model = transformers.BertForPreTraining(config)
    else:  # ALBERT-style names (<pad>, <unk>) and a shared layer group; exact gelu
        out = foreign_tokenizer(tmp_path, shared_data, "unigram", {"[PAD]": "<pad>", "[UNK]": "<unk>"}, front=7)
        config = transformers.AlbertConfig(vocab_size=600, embedding_size=32, hidden_size=64, num_hidden_layers=3,
                                           num_attention_heads=2, intermediate_size=128, hidden_act="gelu")
        model = transformers.AlbertForPreTraining(config)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or "LayerNorm.weight" in name or "layer_norm.weight" in name:
                param.add_(0.05 * torch.randn_like(param))
    model.eval().save_pretrained(out)

    module, _ = imported(tmp_path, shared_data, [f"model.init_from={out}", "objective.sentence=sop"])
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    sentences = real_sentences(shared_data)
    theirs_in = hf_tok(sentences, padding=True, return_tensors="pt")
    batch = batch_for(module.tokenizer_json, sentences, pairs=False)
    # the same text, our ids: the vocabulary was reordered so that our special tokens are ids 0-4
    perm = [hf_tok.convert_tokens_to_ids(module_token) for module_token in _our_tokens(module, hf_tok)]
    assert torch.equal(torch.tensor(perm)[batch["input_ids"]], theirs_in["input_ids"])
    with torch.no_grad():
        out_theirs = model(**theirs_in)
        hidden = module(batch)
        mask = batch["attention_mask"].bool()
        logits = module.objectives["mlm"].head(hidden)
        torch.testing.assert_close(logits[mask], out_theirs.prediction_logits[mask][:, perm], atol=1e-4, rtol=0)
        pair = out_theirs.seq_relationship_logits if arch == "bert" else out_theirs.sop_logits
        torch.testing.assert_close(module.objectives["sop"].head(hidden), pair, atol=1e-4, rtol=0)


def _our_tokens(module, hf_tok) -> list[str]:
    """Our id -> their token string (our special tokens under their names)."""
    from tokenizers import Tokenizer

    from lightning_bert.data.tokenizer import SPECIAL_TOKENS

    tok = Tokenizer.from_str(module.tokenizer_json)
    theirs = [hf_tok.pad_token, hf_tok.unk_token, hf_tok.cls_token, hf_tok.sep_token, hf_tok.mask_token]
    names = [tok.id_to_token(i) for i in range(tok.get_vocab_size())]
    return [theirs[SPECIAL_TOKENS.index(n)] if n in SPECIAL_TOKENS else n for n in names]


def train(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "train.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "WANDB_MODE": "disabled"})


def test_bad_directories_and_contradicting_overrides_exit_2(tmp_path: Path, shared_data: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    base = TINY + data_overrides(tmp_path, shared_data)
    empty = tmp_path / "empty"
    empty.mkdir()
    gpt = tmp_path / "gpt"
    gpt.mkdir()
    (gpt / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    ckpt = make_checkpoint(tmp_path, shared_data, [])
    assert export(ckpt, tmp_path / "hf").returncode == 0
    cases = [(f"model.init_from={empty}", "no config.json"), (f"model.init_from={gpt}", "'gpt2' is not supported"),
             (f"model.init_from={tmp_path / 'missing'}", "no such directory")]
    from lightning_bert.cli import train_main

    for override, needle in cases:  # in this process: a subprocess each cost seconds of imports
        code, err = call_main(capsys, train_main, base + [override])
        assert code == 2 and needle in err, err[-1000:]
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    from lightning_bert.config import load
    from lightning_bert.errors import UserError
    from lightning_bert.export import init_from

    for override, key in (("model.hidden_size=256", "model.hidden_size=256"), ("model.num_layers=4", "model.num_layers"),
                          ("tokenizer.vocab_size=5000", "tokenizer.vocab_size"),
                          ("model.share_layers=all", "model.share_layers")):
        cfg = load([o for o in base if not o.startswith("model.hidden_size")] + [f"model.init_from={tmp_path / 'hf'}",
                                                                                 override])
        with pytest.raises(UserError, match=key.replace(".", r"\.")):
            init_from(cfg)
    proc = train(base + [f"model.init_from={tmp_path / 'hf'}", "model.num_layers=5"])
    assert proc.returncode == 2 and "model.num_layers=5 contradicts" in proc.stderr


@pytest.mark.slow
def test_continued_pretraining_from_an_exported_directory(tmp_path: Path, shared_data: Path) -> None:
    ckpt = make_checkpoint(tmp_path, shared_data, ["objective.sentence=nsp"])
    assert export(ckpt, tmp_path / "hf").returncode == 0
    proc = train(TINY + data_overrides(tmp_path, shared_data)
                 + [f"model.init_from={tmp_path / 'hf'}", "objective.sentence=nsp", "run.name=cont", "eval.probes=false"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "initialised from" in proc.stderr
    run = torch.load(tmp_path / "runs" / "cont" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    start = torch.load(ckpt, map_location="cpu", weights_only=False)
    from tokenizers import Tokenizer

    assert Tokenizer.from_str(run["tokenizer"]).get_vocab() == Tokenizer.from_str(start["tokenizer"]).get_vocab()
    moved = (run["state_dict"]["encoder.embeddings.word_embeddings.weight"]
             - start["state_dict"]["encoder.embeddings.word_embeddings.weight"]).abs().max()
    assert 0 < moved < 0.1  # trained a few steps from the imported weights, not from a fresh init
