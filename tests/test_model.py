"""Encoder + MLM head behaviour: sparse loss equals the dense loss; a tiny model can overfit a batch."""
import torch
import torch.nn.functional as F

from lightning_bert.config import load
from lightning_bert.model.encoder import BertEncoder, EncoderConfig
from lightning_bert.data.masking import IGNORE
from lightning_bert.objectives import build_objectives


def _batch(vocab: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (4, 32), generator=g)
    labels = torch.full_like(ids, IGNORE)
    chosen = torch.rand(ids.shape, generator=g) < 0.15
    labels[chosen] = ids[chosen]
    ids = ids.masked_fill(chosen, 4)
    mask = torch.ones_like(ids)
    mask[1, 20:] = 0
    labels[1, 20:] = IGNORE
    return {"input_ids": ids, "attention_mask": mask, "mlm_labels": labels}


def test_sparse_mlm_loss_equals_dense_loss() -> None:
    cfg = load(["model.hidden_size=64", "model.intermediate_size=128"])
    encoder = BertEncoder(EncoderConfig(vocab_size=500, hidden_size=64, num_layers=2, num_heads=2,
                                        intermediate_size=128)).eval()
    mlm = build_objectives(cfg, encoder)["mlm"]
    batch = _batch(500)
    hidden = encoder(batch["input_ids"], None, batch["attention_mask"])
    sparse = mlm(hidden, batch).loss
    dense_logits = mlm.head(hidden)  # every position, as a dense head would
    dense = F.cross_entropy(dense_logits.view(-1, 500), batch["mlm_labels"].view(-1), ignore_index=IGNORE)
    torch.testing.assert_close(sparse, dense, rtol=1e-5, atol=1e-6)


def test_padding_does_not_change_real_token_outputs() -> None:
    encoder = BertEncoder(EncoderConfig(vocab_size=100, hidden_size=32, num_layers=2, num_heads=2,
                                        intermediate_size=64)).eval()
    ids = torch.randint(5, 100, (1, 10))
    padded = torch.cat([ids, torch.zeros(1, 6, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 10), torch.zeros(1, 6)], dim=1).long()
    torch.testing.assert_close(encoder(ids)[:, :10], encoder(padded, None, mask)[:, :10], rtol=1e-5, atol=1e-5)


def test_tiny_model_overfits_one_batch() -> None:
    torch.manual_seed(0)
    cfg = load(["model.hidden_size=64", "model.intermediate_size=128", "model.dropout=0", "model.attention_dropout=0"])
    encoder = BertEncoder(EncoderConfig(vocab_size=300, hidden_size=64, num_layers=2, num_heads=2,
                                        intermediate_size=128, dropout=0.0, attention_dropout=0.0))
    mlm = build_objectives(cfg, encoder)["mlm"]
    params = list({id(p): p for p in [*encoder.parameters(), *mlm.parameters()]}.values())  # decoder is tied
    optimizer = torch.optim.AdamW(params, lr=3e-3)
    batch = _batch(300)
    for _ in range(150):
        loss = mlm(encoder(batch["input_ids"], None, batch["attention_mask"]), batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5


def test_albert_sharing_reduces_parameters() -> None:
    sizes = {}
    for share in ("none", "attention", "ffn", "all"):
        enc = BertEncoder(EncoderConfig(vocab_size=1000, hidden_size=64, num_layers=4, num_heads=2,
                                        intermediate_size=256, share_layers=share, embedding_size=16))
        sizes[share] = sum(p.numel() for p in enc.parameters())
    assert sizes["all"] < sizes["ffn"] < sizes["attention"] < sizes["none"]
    factorised = BertEncoder(EncoderConfig(vocab_size=1000, hidden_size=64, embedding_size=16))
    full = BertEncoder(EncoderConfig(vocab_size=1000, hidden_size=64))
    assert factorised.embeddings.word_embeddings.weight.shape == (1000, 16)
    assert sum(p.numel() for p in factorised.parameters()) < sum(p.numel() for p in full.parameters())
