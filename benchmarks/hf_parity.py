"""Export parity per architecture: the largest |ours - transformers| on real text (WikiText-2 valid), fp32.

    nice python benchmarks/hf_parity.py [CKPT ...]

Without arguments: one checkpoint per layout with random, non-trivial weights (LayerNorm gains and biases
too) and a WordPiece tokenizer trained on Wikipedia; with CKPT paths: those checkpoints. Prints the
architecture written, and the max abs difference of MLM logits, pooled output and pair-head logits
(BERT / ALBERT), of MLM logits (RoBERTa-PreLayerNorm, DeBERTa, ModernBERT), of the content stream (XLNet).
(*) Truncated pairs can differ by one token: glue.encode pops from segment A when both are equally long,
transformers' longest_first (and BERT's _truncate_seq_pair) from segment B.
"""
from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

import torch

from lightning_bert.config import load, to_dict
from lightning_bert.data.corpus import read_documents
from lightning_bert.data.tokenizer import train_tokenizer
from lightning_bert.eval.glue import collate_encoded, encode
from lightning_bert.hf.export import export_dir
from lightning_bert.train.pretrain import PretrainModule

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
LAYOUTS = {"bert+nsp": ["objective.sentence=nsp"], "albert+sop (shared, E=32)": [
    "objective.sentence=sop", "model.embedding_size=32", "model.share_layers=all", "model.num_layers=3"],
    "pre-LN": ["model.norm_position=pre"], "deberta (+EMD dropped)": ["experiment=deberta", "tokenizer.kind=wordpiece"],
    "xlnet": ["experiment=xlnet"],
    "modernbert (local/global)": [  # ModernBERT's layout; a 16-token window, so local and global layers differ
        "model.positions=rope", "model.rope_theta=160000", "model.local_rope_theta=10000", "model.ffn=geglu",
        "model.norm_position=pre", "model.first_attention_norm=false", "model.segment_embeddings=false",
        "model.attention_bias=false", "model.mlp_bias=false", "model.norm_bias=false", "model.head_bias=false",
        "model.local_window=16", "model.global_every=3", "model.num_layers=4"]}
SMALL = ["model.hidden_size=64", "model.intermediate_size=128", "data.max_seq_length=128", "logger.wandb.mode=disabled"]


def random_checkpoint(overrides: list[str], path: Path) -> Path:
    cfg = load(SMALL + overrides)
    docs = read_documents([str(DATA / "wikipedia-en" / "valid.txt")], "auto", "text")[:40]
    tok = train_tokenizer(cfg.tokenizer.kind, docs, 1000)
    torch.manual_seed(0)
    module = PretrainModule(to_dict(cfg), tok.get_vocab_size(), tok.to_str())
    with torch.no_grad():
        for name, param in module.named_parameters():
            if "norm" in name and name.endswith("weight"):
                param.copy_(1 + 0.1 * torch.randn_like(param))
            elif name.endswith("bias"):
                param.copy_(0.05 * torch.randn_like(param))
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict(),
                "tokenizer": tok.to_str(), "global_step": 0}, path)
    return path


def sentences() -> list[str]:
    lines = (DATA / "wikitext-2-raw" / "wiki.valid.raw").read_text(encoding="utf-8").splitlines()
    paragraphs = [l.strip() for l in lines if len(l.split()) > 8 and not l.strip().startswith("=")]
    return [" ".join(p.split()[:40]) for p in paragraphs[:64]]


@torch.no_grad()
def parity(ckpt: Path, out: Path) -> tuple[str, dict[str, float]]:
    import transformers
    from tokenizers import Tokenizer

    raw = torch.load(ckpt, map_location="cpu", weights_only=False)
    ours = PretrainModule(raw["hyper_parameters"]["config"], raw["hyper_parameters"]["vocab_size"], raw["tokenizer"])
    ours.load_state_dict(raw["state_dict"])
    ours.eval()
    export_dir(ckpt, out, overwrite=True)
    arch = transformers.AutoConfig.from_pretrained(out).architectures[0]
    model = getattr(transformers, arch).from_pretrained(out).eval()
    texts = sentences()
    pairs = ours.cfg.objective.sentence != "none"
    batch = collate_encoded(encode(Tokenizer.from_str(raw["tokenizer"]),
                           [(a, b if pairs else None, 0) for a, b in zip(texts, texts[1:] + texts[:1])], 512))
    theirs_in = transformers.AutoTokenizer.from_pretrained(out)(
        texts, texts[1:] + texts[:1] if pairs else None, padding=True, return_tensors="pt")  # no truncation (*)
    result = {"same ids": float(torch.equal(theirs_in["input_ids"], batch["input_ids"]))}
    mask = batch["attention_mask"].bool()
    hidden = ours.encoder(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
    if arch.startswith("XLNet"):
        theirs = model.transformer(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                                   attention_mask=batch["attention_mask"].float()).last_hidden_state
        result["content stream"] = float((theirs[mask] - hidden[mask]).abs().max())
        return arch, result
    out_t = model(**{k: batch[k] for k in theirs_in})  # the inputs its tokenizer gives (ModernBERT: no segments)
    logits = out_t.prediction_logits if hasattr(out_t, "prediction_logits") else out_t.logits
    result["MLM logits"] = float((logits[mask] - ours.objectives["mlm"].head(hidden)[mask]).abs().max())
    pair = next((n for n in ("nsp", "sop") if n in ours.objectives), None)
    if pair and arch.endswith("PreTraining"):
        head = ours.objectives[pair].head
        pair_logits = out_t.seq_relationship_logits if hasattr(out_t, "seq_relationship_logits") else out_t.sop_logits
        result["pair logits"] = float((pair_logits - head(hidden)).abs().max())
        pooled = getattr(model, model.base_model_prefix)(input_ids=batch["input_ids"], token_type_ids=batch[
            "token_type_ids"], attention_mask=batch["attention_mask"]).pooler_output
        result["pooled"] = float((pooled - head.pooler(hidden[:, 0]).tanh()).abs().max())
    return arch, result


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    tmp = Path(tempfile.mkdtemp(prefix="hf-parity-"))
    jobs = ({Path(p).name: Path(p) for p in sys.argv[1:]} or
            {name: random_checkpoint(ov, tmp / f"{i}.ckpt") for i, (name, ov) in enumerate(LAYOUTS.items())})
    for name, ckpt in jobs.items():
        arch, result = parity(ckpt, tmp / f"hf-{arch_safe(name)}")
        print(f"{name:28s} -> {arch:32s} " + "  ".join(f"{k} {v:.1e}" if k != "same ids" else f"ids {'equal' if v else 'DIFFER'}"
                                                       for k, v in result.items()), flush=True)


def arch_safe(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


if __name__ == "__main__":
    main()
