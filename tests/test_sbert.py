"""Sentence-BERT training on real STS-B slices: CoSENT against its formula, whitening, a run that learns."""
import json
import math
import random
from pathlib import Path

import pytest
import torch

from conftest import GLUE_DIR
from test_export import make_checkpoint


def stsb(split: str, n: int) -> list[tuple[str, str, float]]:
    from lightning_bert.eval.glue import read_task

    return read_task("stsb", split, GLUE_DIR)[:n]


def test_cosent_loss_equals_its_formula_on_real_scores(shared_data: Path) -> None:
    from lightning_bert.eval.sbert import cosent_loss

    scores = torch.tensor([y for *_, y in stsb("train", 24)], dtype=torch.float64)
    cos = torch.rand(len(scores), generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    for scale in (1.0, 20.0):
        total = 1.0
        for i in range(len(scores)):
            for j in range(len(scores)):
                if scores[i] > scores[j]:  # pair i should be more similar than pair j
                    total += math.exp(scale * (cos[j] - cos[i]))
        assert float(cosent_loss(cos, scores, scale)) == pytest.approx(math.log(total), rel=1e-12)
    ordered = scores.argsort().argsort().double() / len(scores)  # cosines in the gold order: lower loss
    assert cosent_loss(ordered, scores, 20.0) < cosent_loss(-ordered, scores, 20.0)
    tied = torch.full((4,), 2.0, dtype=torch.float64)
    assert float(cosent_loss(torch.rand(4, dtype=torch.float64), tied)) == 0.0  # no ordered pair: log(1) = 0


def test_whitening_gives_identity_covariance_on_the_fitting_set(shared_data: Path) -> None:
    from tokenizers import Tokenizer

    from lightning_bert.train.checkpoint import load_pretrained
    from lightning_bert.eval.embeddings import embed
    from lightning_bert.eval.sbert import Whitening

    encoder, tokenizer, _ = load_pretrained(_ckpt(shared_data))
    sentences = list(dict.fromkeys(s for a, b, _ in stsb("train", 400) for s in (a, b)))
    emb = embed(encoder, tokenizer, sentences, ("mean",), max_length=64)["mean"]
    assert isinstance(tokenizer, Tokenizer) and emb.shape[0] > emb.shape[1]
    white = Whitening.fit(emb)
    x = white(emb).double()
    torch.testing.assert_close(x.mean(0), torch.zeros(x.shape[1], dtype=torch.float64), atol=1e-4, rtol=0)
    dims = x.shape[1]
    assert dims >= emb.shape[1] - 1  # at most the LayerNorm hyperplane's zero-variance direction is dropped
    cov = (x - x.mean(0)).T @ (x - x.mean(0)) / len(x)
    torch.testing.assert_close(cov, torch.eye(dims, dtype=torch.float64), atol=1e-3, rtol=0)
    k = 16
    xk = Whitening.fit(emb, k)(emb).double()
    assert xk.shape == (len(sentences), k)
    torch.testing.assert_close(xk.T @ xk / len(xk), torch.eye(k, dtype=torch.float64), atol=1e-3, rtol=0)
    raw_cov = (emb - emb.mean(0)).T.double() @ (emb - emb.mean(0)).double() / len(emb)
    assert not torch.allclose(raw_cov, torch.eye(emb.shape[1], dtype=torch.float64), atol=1e-2)  # it did something


_CKPT: dict[str, Path] = {}


def _ckpt(shared_data: Path) -> Path:
    """One tiny random-weight checkpoint shared by this module's tests."""
    if "path" not in _CKPT:
        import tempfile

        _CKPT["path"] = make_checkpoint(Path(tempfile.mkdtemp(prefix="sbert-test-")), shared_data, [])
    return _CKPT["path"]


def test_training_raises_spearman_and_writes_the_run_record(tmp_path: Path, shared_data: Path) -> None:
    from lightning_bert.eval.sbert import main

    args = [f"ckpt={_ckpt(shared_data)}", "max_train_examples=512", "max_dev_examples=300", "epochs=2", "lr=5e-4",
            "batch_size=16", "whiten=true", "max_seq_length=48", f"output_dir={tmp_path}", "name=run",
            "progress=false", "logger.wandb.mode=offline", f"glue_dir={GLUE_DIR}"]
    assert main(args) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    metrics = summary["metrics"]
    for pooling in ("cls", "mean", "eos"):
        for variant in ("", "_norm", "_whiten"):
            for name in ("spearman_before", "spearman_after", "anisotropy_before", "anisotropy_after"):
                assert math.isfinite(metrics[f"sts/{pooling}{variant}/{name}"])
    assert metrics["sts/mean/spearman_after"] > metrics["sts/mean/spearman_before"] + 0.01  # trained pooling learns
    assert abs(metrics["sts/mean_whiten/anisotropy_before"]) < 0.05 < metrics["sts/mean/anisotropy_before"]
    assert (tmp_path / "run" / "metrics.csv").read_text().startswith(("epoch", "step", "train"))
    assert "loss: cosent" in (tmp_path / "run" / "config.yaml").read_text()
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))  # logged to W&B (offline here)

    from lightning_bert.train.checkpoint import load_pretrained
    from lightning_bert.eval.embeddings import sts_zero_shot

    encoder, tokenizer, _ = load_pretrained(tmp_path / "run" / "sbert.ckpt")  # the trained encoder, usual format
    dev = random.Random(0).sample(stsb("dev", 1500), 300)  # the subset max_dev_examples=300 scores
    rho = sts_zero_shot(encoder, tokenizer, [(a, b) for a, b, _ in dev], [y for *_, y in dev], "mean")
    assert rho == pytest.approx(metrics["sts/mean/spearman_after"], abs=1e-3)


def test_pair_sources_and_loss_mismatch(tmp_path: Path, shared_data: Path) -> None:
    from lightning_bert.errors import UserError
    from lightning_bert.eval.sbert import SBertConfig, SBertModule, training_pairs

    rows = stsb("train", 5)
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("sentence1\tsentence2\tlabel\n" + "".join(f"{a}\t{b}\t{'yes' if y > 2.5 else 'no'}\n"
                                                          for a, b, y in rows))
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text("".join(json.dumps({"sentence1": a, "sentence2": b, "score": y}) + "\n" for a, b, y in rows))
    labelled = training_pairs(SBertConfig(ckpt="x", loss="softmax", train_file=str(tsv)))
    assert labelled == [(a, b, "yes" if y > 2.5 else "no") for a, b, y in rows]
    assert training_pairs(SBertConfig(ckpt="x", train_file=str(jsonl))) == [(a, b, float(y)) for a, b, y in rows]
    mrpc = training_pairs(SBertConfig(ckpt="x", loss="softmax", glue_task="mrpc", glue_dir=str(GLUE_DIR),
                                      max_train_examples=50))
    assert len(mrpc) == 50 and {y for *_, y in mrpc} <= {0, 1}
    with pytest.raises(UserError, match="loss=cosent needs scored pairs"):
        training_pairs(SBertConfig(ckpt="x", glue_task="mrpc", glue_dir=str(GLUE_DIR)))
    with pytest.raises(UserError, match="loss=softmax needs labelled pairs"):
        training_pairs(SBertConfig(ckpt="x", loss="softmax", glue_dir=str(GLUE_DIR)))

    from lightning_bert.train.checkpoint import load_pretrained
    from lightning_bert.eval.glue import collate_encoded, encode

    encoder, tokenizer, _ = load_pretrained(_ckpt(shared_data))
    model = SBertModule(encoder, SBertConfig(ckpt="x", loss="softmax", normalize=True), num_labels=2).eval()
    a = collate_encoded(encode(tokenizer, [(x, None, 0) for x, _, _ in rows], 32))
    b = collate_encoded(encode(tokenizer, [(x, None, 0) for _, x, _ in rows], 32))
    target = torch.tensor([int(y > 2.5) for *_, y in rows])
    loss = model.loss(a, b, target)
    u, v = model.embed(a), model.embed(b)
    assert torch.allclose(u.norm(dim=-1), torch.ones(len(rows)))
    expected = torch.nn.functional.cross_entropy(model.classifier(torch.cat([u, v, (u - v).abs()], -1)), target)
    torch.testing.assert_close(loss, expected)
