"""Export: transformers loads our checkpoint with its Auto classes and computes the same numbers on real text."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO, TINY, call_main

transformers = pytest.importorskip("transformers")


def real_sentences(shared_data: Path, n: int = 12) -> list[str]:
    """Paragraph openings from WikiText-2 valid (held-out text), of varied length."""
    lines = (shared_data / "wikitext-2-raw" / "wiki.valid.raw").read_text(encoding="utf-8").splitlines()
    paragraphs = [line.strip() for line in lines if len(line.split()) > 8 and not line.strip().startswith("=")]
    return [" ".join(p.split()[: 6 + 5 * (i % 6)]) for i, p in enumerate(paragraphs[:n])]


def make_checkpoint(tmp_path: Path, shared_data: Path, overrides: list[str], name: str = "model") -> Path:
    """A pretraining checkpoint (the format train.py writes) with random non-trivial weights everywhere
    (LayerNorm gains, biases, MLM bias), a WordPiece tokenizer trained on real Wikipedia text."""
    from lightning_bert.config import load, to_dict
    from lightning_bert.data.corpus import read_documents
    from lightning_bert.data.tokenizer import train_tokenizer
    from lightning_bert.train.pretrain import PretrainModule

    cfg = load([o for o in TINY if not o.startswith("tokenizer")] + overrides)
    docs = read_documents([str(shared_data / "wikipedia-en" / "valid.txt")], "auto", "text")[:40]
    tok = train_tokenizer(cfg.tokenizer.kind, docs, 1000)
    torch.manual_seed(0)
    module = PretrainModule(to_dict(cfg), tok.get_vocab_size(), tok.to_str())
    with torch.no_grad():
        for pname, param in module.named_parameters():
            if "norm" in pname and pname.endswith("weight"):
                param.copy_(1 + 0.1 * torch.randn_like(param))
            elif pname.endswith("bias"):
                param.copy_(0.05 * torch.randn_like(param))
    path = tmp_path / f"{name}.ckpt"
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict(),
                "tokenizer": tok.to_str(), "global_step": 0}, path)
    return path


def export(ckpt: Path, out: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lightning_bert.export", str(ckpt), str(out), *flags], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def ours(ckpt: Path):
    from lightning_bert.train.pretrain import PretrainModule

    raw = torch.load(ckpt, map_location="cpu", weights_only=False)
    module = PretrainModule(raw["hyper_parameters"]["config"], raw["hyper_parameters"]["vocab_size"], raw["tokenizer"])
    module.load_state_dict(raw["state_dict"])
    return module.eval()


def batch_for(tokenizer_json: str, sentences: list[str], pairs: bool) -> dict[str, torch.Tensor]:
    from tokenizers import Tokenizer

    from lightning_bert.eval.glue import collate_encoded, encode

    tok = Tokenizer.from_str(tokenizer_json)
    examples = [(a, b if pairs else None, 0) for a, b in zip(sentences, sentences[1:] + sentences[:1])]
    return collate_encoded(encode(tok, examples, 512))  # no truncation: compares tokenization only


LAYOUTS = {  # name -> (overrides, Auto class, architecture written)
    "bert_nsp": (["objective.sentence=nsp"], "AutoModelForPreTraining", "BertForPreTraining"),
    "bert_mlm_only": ([], "AutoModelForMaskedLM", "BertForMaskedLM"),
    "albert_sop": (["objective.sentence=sop", "model.embedding_size=32", "model.share_layers=all",
                    "model.num_layers=3"], "AutoModelForPreTraining", "AlbertForPreTraining"),
    "albert_unshared": (["objective.sentence=sop", "model.embedding_size=32"], "AutoModelForPreTraining",
                        "AlbertForPreTraining"),
    "pre_ln": (["model.norm_position=pre"], "AutoModelForMaskedLM", "RobertaPreLayerNormForMaskedLM"),
}


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_exported_model_matches_ours_on_real_text(name: str, tmp_path: Path, shared_data: Path) -> None:
    overrides, auto, arch = LAYOUTS[name]
    ckpt = make_checkpoint(tmp_path, shared_data, overrides)
    proc = export(ckpt, tmp_path / "hf")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == [arch]
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    module = ours(ckpt)
    sentences = real_sentences(shared_data)

    # the tokenizer: AutoTokenizer gives our ids, [CLS]/[SEP] and segments included, for single texts and pairs
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert hf_tok.is_fast and hf_tok.mask_token == "[MASK]" and hf_tok.pad_token_id == 0
    batch = batch_for(module.tokenizer_json, sentences, pairs=True)
    theirs = hf_tok(sentences, sentences[1:] + sentences[:1], padding=True, return_tensors="pt")
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        assert torch.equal(theirs[key], batch[key]), key

    model = getattr(transformers, auto).from_pretrained(tmp_path / "hf").eval()
    assert type(model).__name__ == arch
    with torch.no_grad():
        out = model(**theirs)
        hidden = module(batch)
        mask = batch["attention_mask"].bool()
        logits = module.objectives["mlm"].head(hidden)
        theirs_logits = out.prediction_logits if hasattr(out, "prediction_logits") else out.logits
        torch.testing.assert_close(theirs_logits[mask], logits[mask], atol=1e-4, rtol=0)
        pair = next((n for n in ("nsp", "sop") if n in module.objectives), None)
        if pair:
            head = module.objectives[pair].head
            pair_logits = out.seq_relationship_logits if hasattr(out, "seq_relationship_logits") else out.sop_logits
            torch.testing.assert_close(pair_logits, head(hidden), atol=1e-4, rtol=0)
            pooled = getattr(model, model.base_model_prefix)(**theirs).pooler_output
            torch.testing.assert_close(pooled, head.pooler(hidden[:, 0]).tanh(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("pooling,normalize", [("cls", False), ("mean", True), ("eos", False)])
def test_sentence_transformers_encode_equals_our_pooled_embeddings(pooling: str, normalize: bool, tmp_path: Path,
                                                                     shared_data: Path) -> None:
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

    from lightning_bert.eval.embeddings import embed

    ckpt = make_checkpoint(tmp_path, shared_data, ["objective.sentence=nsp"])
    flags = ["--sentence-transformers", "--pooling", pooling] + (["--normalize"] if normalize else [])
    proc = export(ckpt, tmp_path / "st", *flags)
    assert proc.returncode == 0, proc.stderr[-2000:]
    modules = json.loads((tmp_path / "st" / "modules.json").read_text())
    assert any("Normalize" in m["type"] for m in modules) == normalize
    module = ours(ckpt)
    sentences = real_sentences(shared_data)
    max_length = module.cfg.data.max_seq_length  # the export keeps the length the model was trained with
    expected = embed(module.encoder, Tokenizer.from_str(module.tokenizer_json), sentences, (pooling,),
                     max_length=max_length)[pooling]
    if normalize:
        expected = torch.nn.functional.normalize(expected, dim=-1)
    got = SentenceTransformer(str(tmp_path / "st"), device="cpu").encode(sentences, convert_to_tensor=True)
    torch.testing.assert_close(got.cpu(), expected, atol=1e-5, rtol=0)


def test_bad_input_exits_2_with_one_line(tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lightning_bert.export import main as export_main

    def export_here(ckpt: Path, out: Path) -> tuple[int, str]:
        return call_main(capsys, export_main, [str(ckpt), str(out)])

    missing = export_here(tmp_path / "nope.ckpt", tmp_path / "a")
    corrupt_path = tmp_path / "corrupt.ckpt"
    corrupt_path.write_bytes(b"\x80not a pickle")
    corrupt = export_here(corrupt_path, tmp_path / "b")
    ckpt = make_checkpoint(tmp_path, shared_data, [])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    non_empty = export(ckpt, tmp_path / "full")  # one as a process: nothing else reaches stderr on the way
    for (code, err), needle in ((missing, "not found"), (corrupt, "cannot read"),
                                ((non_empty.returncode, non_empty.stderr), "--overwrite")):
        assert code == 2 and needle in err, err
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert (tmp_path / "full" / "keep.txt").is_file()  # nothing overwritten
    assert export(ckpt, tmp_path / "full", "--overwrite").returncode == 0
    assert not (tmp_path / "full" / "keep.txt").exists()


def test_inexact_layouts_are_refused_in_one_line(tmp_path: Path, shared_data: Path) -> None:
    ckpt = make_checkpoint(tmp_path, shared_data, ["model.share_layers=attention"])
    proc = export(ckpt, tmp_path / "x")
    assert proc.returncode == 2 and "model.share_layers=attention" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()  # refused before writing anything


@pytest.mark.parametrize("name,overrides,arch", [
    ("deberta", ["experiment=deberta", "tokenizer.kind=wordpiece"], "DebertaV2ForMaskedLM"),
    ("xlnet", ["experiment=xlnet"], "XLNetLMHeadModel")])
def test_deberta_and_xlnet_export_through_their_maps(name: str, overrides: list[str], arch: str, tmp_path: Path,
                                                     shared_data: Path) -> None:
    """The registry picks hf/deberta.py and hf/xlnet.py by model.attention; EMD is dropped with one notice."""
    ckpt = make_checkpoint(tmp_path, shared_data, overrides)
    proc = export(ckpt, tmp_path / "hf")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert ("EMD" in proc.stderr) == (name == "deberta")
    module = ours(ckpt)
    sentences = real_sentences(shared_data)
    batch = batch_for(module.tokenizer_json, sentences, pairs=False)
    theirs_in = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")(sentences, padding=True, return_tensors="pt")
    assert torch.equal(theirs_in["input_ids"], batch["input_ids"])
    model = getattr(transformers, arch).from_pretrained(tmp_path / "hf").eval()
    mask = batch["attention_mask"].bool()
    with torch.no_grad():
        hidden = module.encoder(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
        if name == "deberta":  # the MLM head on the encoder (EMD is not exported)
            logits = module.objectives["mlm"].head(hidden)
            torch.testing.assert_close(model(**theirs_in).logits[mask], logits[mask], atol=1e-4, rtol=0)
        else:  # XLNet's content stream without a permutation is our encoder
            theirs = model.transformer(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                                       attention_mask=batch["attention_mask"].float()).last_hidden_state
            torch.testing.assert_close(theirs[mask], hidden[mask], atol=1e-4, rtol=0)


def test_the_registry_names_the_supported_kinds_and_model_types_in_one_line() -> None:
    """Export picks an adapter by our attention kind, import by config.json's model_type; anything else is one
    line that lists what is supported."""
    from lightning_bert.errors import UserError
    from lightning_bert.hf.adapter import HFAdapter
    from lightning_bert.hf.registry import ADAPTERS, exporter, importer
    from lightning_bert.model.config import EncoderConfig

    assert all(isinstance(adapter, HFAdapter) for adapter in ADAPTERS)
    kinds = {kind: EncoderConfig(vocab_size=100, attention=kind) for kind in ("absolute", "disentangled", "relative")}
    assert {kind: type(exporter(cfg)).__name__ for kind, cfg in kinds.items()} == {
        "absolute": "BertFamilyAdapter", "disentangled": "DebertaV2Adapter", "relative": "XLNetAdapter"}
    assert type(importer("albert", "DIR")).__name__ == "BertFamilyAdapter"
    kinds["absolute"].attention = "sliding"  # a kind no adapter exports (the config itself would refuse it)
    with pytest.raises(UserError) as err:
        exporter(kinds["absolute"])
    assert str(err.value) == ("model.attention=sliding has no transformers export; "
                              "supported: absolute, disentangled, relative")
    with pytest.raises(UserError) as err:
        importer("gpt2", "DIR")
    assert str(err.value) == ("model.init_from=DIR: model_type 'gpt2' is not supported; "
                              "supported: albert, bert, deberta-v2, electra, modernbert, roberta-prelayernorm, xlnet")
