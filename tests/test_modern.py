"""Issue 17's model switches: RoPE, GeGLU / SwiGLU, RMSNorm, bias-free layers, ModernBERT's norm placement,
local/global attention and document-masked packing. Tiny random models and autograd checks, no training run."""
import pytest
import torch
from torch import nn

from conftest import call_main
from lightning_bert import cli
from lightning_bert.config import load, to_dict
from lightning_bert.errors import UserError
from lightning_bert.model.attention import apply_rotary
from lightning_bert.model.config import EncoderConfig
from lightning_bert.model.encoder import BertEncoder
from lightning_bert.model.heads import MLMHead
from lightning_bert.model.layers import RMSNorm
from lightning_bert.train.pretrain import PretrainModule

SMALL = dict(vocab_size=60, hidden_size=32, num_heads=4, num_layers=2, intermediate_size=48, dropout=0.0,
             attention_dropout=0.0)
MODERN = dict(positions="rope", ffn="geglu", norm_position="pre", first_attention_norm=False, norm_bias=False,
              attention_bias=False, mlp_bias=False, head_bias=False, segment_embeddings=False)


def encoder(**overrides) -> BertEncoder:
    torch.manual_seed(0)
    return BertEncoder(EncoderConfig(**{**SMALL, **overrides})).eval()


def test_rope_scores_depend_on_relative_position_only_and_follow_transformers() -> None:
    from transformers.models.modernbert.modeling_modernbert import apply_rotary_pos_emb

    model = encoder(positions="rope", rope_theta=160000.0)
    assert model.embeddings.position_embeddings is None  # no learned positions at the input
    q, k = torch.randn(1, 1, 1, 8).expand(1, 1, 40, 8), torch.randn(1, 1, 1, 8).expand(1, 1, 40, 8)
    ids = torch.zeros(1, 40, dtype=torch.long)
    scores = []
    for shift in (0, 17):
        cos, sin = model.positions(ids, None, None, torch.arange(40)[None] + shift).tables[160000.0]
        cos, sin = cos[..., :8], sin[..., :8]  # a head of 8 here: the first frequencies' layout is the same
        scores.append(apply_rotary(q, cos, sin) @ apply_rotary(k, cos, sin).transpose(-1, -2))
    torch.testing.assert_close(scores[0], scores[1], atol=1e-4, rtol=1e-4)  # shifting both leaves q.k unchanged
    assert not torch.allclose(scores[0][..., 0, 1], scores[0][..., 0, 5])  # but the distance matters
    cos, sin = model.positions(ids, None, None).tables[160000.0]
    qh, kh = torch.randn(2, 4, 40, 8), torch.randn(2, 4, 40, 8)
    expected = apply_rotary_pos_emb(qh, kh, cos, sin)
    torch.testing.assert_close((apply_rotary(qh, cos, sin), apply_rotary(kh, cos, sin)), expected)


def test_rope_rotates_in_fp32_and_casts_back() -> None:
    model = encoder(positions="rope").to(torch.bfloat16)
    cos, sin = model.positions(torch.zeros(1, 4096, dtype=torch.long), None, None).tables[10000.0]
    assert cos.dtype == torch.float32  # angles up to 4096 rad keep their phase
    x = torch.randn(1, 1, 4096, 8, dtype=torch.bfloat16)
    assert apply_rotary(x, cos[..., :8], sin[..., :8]).dtype == torch.bfloat16


def local_layer_gradient(window: int, query: int) -> torch.Tensor:
    """|d out[query] / d in[j]| summed over features, for each key j, through layer 1 (local) alone."""
    model = encoder(positions="rope", local_window=window, global_every=2, norm_position="pre")
    ids = torch.randint(5, 60, (1, 24))
    assert model.specs[1].window == window and model.specs[0].window is None
    mask = model.layer_masks(ids, None)[1]
    context = model.positions(ids, None, None)
    x = torch.randn(1, 24, 32, requires_grad=True)
    (model.layers[1](x, mask, context)[0, query] * torch.randn(32)).sum().backward()
    return x.grad[0].abs().sum(-1)


def test_window_is_exact_a_token_outside_has_zero_gradient() -> None:
    grad = local_layer_gradient(window=8, query=10)
    distance = (torch.arange(24) - 10).abs()
    assert bool((grad[distance > 4] == 0).all())  # exactly zero, not small
    assert bool((grad[distance <= 4] > 0).all())


def packed_rows(position_ids: bool = True) -> dict[str, torch.Tensor]:
    """Row 0 packs documents of 9 and 11 tokens; row 1 one of 7 tokens then padding."""
    ids = torch.randint(5, 60, (2, 20))
    documents = torch.tensor([[0] * 9 + [1] * 11, [0] * 7 + [-1] * 13])
    positions = torch.tensor([list(range(9)) + list(range(11)), list(range(7)) + [0] * 13])
    attention = (documents >= 0).long()
    batch = {"input_ids": ids, "attention_mask": attention, "document_ids": documents}
    return {**batch, "position_ids": positions} if position_ids else batch


@pytest.mark.parametrize("scheme", ["absolute", "rope"])
def test_document_masking_no_gradient_crosses_and_positions_restart(scheme: str) -> None:
    model = encoder(positions=scheme, norm_position="pre")
    batch = packed_rows()
    captured = {}
    model.embeddings.register_forward_hook(lambda module, args, out: captured.update(x=out) or out.retain_grad())
    hidden = model(batch["input_ids"], None, batch["attention_mask"], position_ids=batch["position_ids"],
                   document_ids=batch["document_ids"])
    assert bool(torch.isfinite(hidden).all())  # padding rows included
    (hidden[0, 9:] * torch.randn(11, 32)).sum().backward()  # the second document of row 0 (a plain sum of a
    # normed row is constant: weigh it)
    grad = captured["x"].grad.abs().sum(-1)
    assert bool((grad[0, :9] == 0).all()) and bool((grad[0, 9:] > 0).all()) and bool((grad[1] == 0).all())
    # positions restart: the second document packed is the same as that document alone in its own row
    alone = model(batch["input_ids"][:1, 9:])
    torch.testing.assert_close(hidden[0, 9:], alone[0], atol=1e-5, rtol=1e-5)
    crossed = model(batch["input_ids"], None, batch["attention_mask"])  # cross packing sees the first document
    assert not torch.allclose(crossed[0, 9:], alone[0], atol=1e-3)


def test_window_and_documents_combine_with_padding() -> None:
    model = encoder(local_window=4, global_every=2)
    batch = packed_rows()
    local = model.layer_masks(batch["input_ids"], batch["attention_mask"], batch["document_ids"])[1][0, 0]
    i, j = torch.meshgrid(torch.arange(20), torch.arange(20), indexing="ij")
    real = batch["attention_mask"][0].bool()
    expected = ((i - j).abs() <= 2) & (batch["document_ids"][0][i] == batch["document_ids"][0][j]) & real[j]
    assert torch.equal(local, expected)
    row1 = model.layer_masks(batch["input_ids"], batch["attention_mask"], batch["document_ids"])[1][1, 0]
    assert bool(row1.any(-1).all())  # a padding query row still sees a real token: no NaN from an empty softmax


def ffn_parameters(model: BertEncoder) -> int:
    return sum(p.numel() for p in model.layers[0].ffn.parameters())


def test_glu_parameter_counts() -> None:
    hidden, width = 32, 48
    geglu = encoder(ffn="geglu")
    assert geglu.layers[0].ffn.up.weight.shape == (2 * width, hidden)  # ModernBERT's Wi
    assert ffn_parameters(geglu) == 3 * hidden * width + 2 * width + hidden
    swiglu = encoder(ffn="swiglu", mlp_bias=False)
    assert swiglu.layers[0].ffn.down.in_features == 2 * width // 3
    assert ffn_parameters(swiglu) == ffn_parameters(encoder(ffn="gelu", mlp_bias=False)) == 2 * hidden * width
    x = torch.randn(3, hidden)
    ffn = swiglu.layers[0].ffn
    value, gate = ffn.up(x).chunk(2, -1)
    torch.testing.assert_close(ffn(x), ffn.down(nn.functional.silu(value) * gate))


def test_rmsnorm_matches_torch_and_every_norm_follows_the_kind() -> None:
    model = encoder(norm="rmsnorm", norm_position="pre")
    norm = model.layers[0].ffn_norm
    assert isinstance(norm, RMSNorm) and bool((norm.weight == 1).all())
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    reference = nn.RMSNorm(32, eps=norm.eps)
    reference.load_state_dict(norm.state_dict())
    x = torch.randn(4, 7, 32) * 3 + 1
    torch.testing.assert_close(norm(x), reference(x))
    assert not any(isinstance(m, nn.LayerNorm) for m in model.modules())
    assert isinstance(MLMHead(model).norm, RMSNorm)


def test_bias_free_modernbert_layout() -> None:
    model = encoder(**MODERN)
    head = MLMHead(model)
    biases = [name for name, _ in [*model.named_parameters(), *head.named_parameters()] if name.endswith("bias")]
    assert biases == ["bias"]  # only the decoder's output bias (ModernBERT decoder_bias=true)
    assert isinstance(model.layers[0].attention_norm, nn.Identity)
    assert not isinstance(model.layers[1].attention_norm, nn.Identity)
    assert model.embeddings.token_type_embeddings is None and not isinstance(model.final_norm, nn.Identity)
    x = torch.randn(5, 32)
    norm = model.layers[1].ffn_norm
    torch.testing.assert_close(norm(x), nn.LayerNorm(32, eps=norm.eps, bias=False)(x))
    ids = torch.randint(5, 60, (2, 9))
    torch.testing.assert_close(model(ids, torch.ones_like(ids)), model(ids))  # no segment table: ids ignored
    assert MLMHead(encoder(decoder_bias=False)).bias is None


@pytest.mark.parametrize("overrides, needle", [
    (["model.positions=rope", "model.hidden_size=60", "model.num_heads=4"], "model.positions=rope needs an even head"),
    (["model.local_window=200", "model.global_every=3"], "model.local_window=200 is larger than the sequence"),
    (["model.local_window=0", "model.global_every=3"], "model.local_window=0 is out of range"),
    (["model.global_every=0"], "model.global_every=0 is out of range"),
    (["model.global_every=3"], "model.global_every=3 needs model.local_window"),
    (["model.ffn=swiglu", "model.intermediate_size=100"], "model.intermediate_size=100 does not divide"),
    (["model.positions=rope", "model.attention=disentangled"], "model.positions='rope' is not allowed"),
    (["model.first_attention_norm=false"], "model.first_attention_norm=false needs model.norm_position=pre"),
    (["model.local_rope_theta=10000"], "model.local_rope_theta applies to windowed layers"),
])
def test_bad_input_is_one_line_exit_2(overrides: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UserError, match=needle):
        load(overrides)
    code, err = call_main(capsys, cli.main, ["train", *overrides])
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_pretrain_module_threads_packing_keys_to_the_encoder() -> None:
    cfg = load(["model.hidden_size=32", "model.num_heads=4", "model.intermediate_size=48", "model.positions=rope",
                "model.dropout=0", "model.attention_dropout=0", "data.max_seq_length=20"])
    module = PretrainModule(to_dict(cfg), vocab_size=60).eval()
    batch = packed_rows()
    packed = module.encode(batch)[0]
    direct = module.encoder(batch["input_ids"], None, batch["attention_mask"], position_ids=batch["position_ids"],
                            document_ids=batch["document_ids"])
    torch.testing.assert_close(packed, direct)
    unpacked = module.encode({k: batch[k] for k in ("input_ids", "attention_mask")})[0]
    assert not torch.allclose(packed[0, 9:], unpacked[0, 9:], atol=1e-3)


def test_modernbert_switches_reach_every_parameter_through_the_mlm_loss() -> None:
    """A ModernBERT-shaped PretrainModule (3 layers, local/global, two RoPE bases) on a packed, padded
    batch: the loss is finite and every parameter gets a gradient (DDP needs no unused parameter)."""
    cfg = load(["model.hidden_size=32", "model.num_heads=4", "model.intermediate_size=48", "model.num_layers=3",
                "model.positions=rope", "model.ffn=geglu", "model.norm_position=pre", "model.first_attention_norm=false",
                "model.norm_bias=false", "model.attention_bias=false", "model.mlp_bias=false", "model.head_bias=false",
                "model.segment_embeddings=false", "model.local_window=8", "model.global_every=3",
                "model.rope_theta=160000", "model.local_rope_theta=10000", "data.max_seq_length=20"])
    module = PretrainModule(to_dict(cfg), vocab_size=60)
    assert [spec.window for spec in module.encoder.specs] == [None, 8, 8]
    assert [spec.rope_theta for spec in module.encoder.specs] == [160000.0, 10000.0, 10000.0]
    batch = packed_rows()
    batch["mlm_labels"] = torch.where(torch.rand(2, 20) < 0.3, batch["input_ids"], torch.full((2, 20), -100))
    batch["mlm_labels"][0, 3] = batch["input_ids"][0, 3]
    loss = module._outputs(batch)["mlm"].loss
    loss.backward()
    assert bool(torch.isfinite(loss))
    assert [name for name, p in module.named_parameters() if p.grad is None or not p.grad.abs().sum()] == []
