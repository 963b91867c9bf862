"""The model's seams: a new norm / feed-forward / attention kind is one decorated class plus a config value,
layers are built from per-layer specs, and checkpoints written by main a15e608 still load with its numerics."""
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
import torch
from torch import Tensor, nn

from lightning_bert import config
from lightning_bert.train.checkpoint import load_pretrained, read_checkpoint, upgrade_config
from lightning_bert.config import ConfigError, load
from lightning_bert.errors import UserError
from lightning_bert.train.fit import run
from lightning_bert.model.attention import ATTENTIONS, AbsoluteAttention, register_attention
from lightning_bert.model.config import EncoderConfig, LayerSpec
from lightning_bert.model.encoder import BertEncoder
from lightning_bert.model.layers import FEED_FORWARDS, NORMS, register_ffn, register_norm

FIXTURES = Path(__file__).parent / "fixtures"


def test_checkpoint_from_main_a15e608_loads_with_its_numerics() -> None:
    """tests/fixtures/main_a15e608.ckpt: `train.py` of main a15e608 (tiny, hidden 32, FFN 64, vocab 300, one
    step, model.norm=post in its config), kept whole (optimizer state included). The .pt beside it holds input
    ids and the hidden states main's own encoder computed from them, so this compares with main's numerics."""
    expected = torch.load(FIXTURES / "main_a15e608_expected.pt")
    encoder, tokenizer, cfg = load_pretrained(FIXTURES / "main_a15e608.ckpt")
    assert (cfg.model.norm_position, cfg.model.norm, cfg.model.ffn) == ("post", "layernorm", "gelu")
    with torch.no_grad():
        hidden = encoder.eval()(expected["input_ids"], None, expected["attention_mask"])
    torch.testing.assert_close(hidden, expected["hidden"], rtol=0, atol=1e-6)


def test_old_norm_key_fails_naming_the_new_one_and_old_configs_are_translated() -> None:
    with pytest.raises(ConfigError, match="use model.norm_position=pre") as err:
        load(["model.norm=pre"])
    assert "\n" not in str(err.value)
    upgraded = upgrade_config({"model": {"norm": "pre", "hidden_size": 32}})["model"]
    assert (upgraded["norm_position"], upgraded["norm"], upgraded["hidden_size"]) == ("pre", "layernorm", 32)


def test_unknown_kinds_fail_in_one_line_naming_the_key() -> None:
    for kw, key in ((dict(norm="nope"), "model.norm='nope'"), (dict(ffn="nope"), "model.ffn='nope'")):
        with pytest.raises(UserError, match=key):
            BertEncoder(EncoderConfig(vocab_size=50, hidden_size=16, **kw))
    with pytest.raises(ConfigError, match="model.positions='disentangled' is not allowed; choose one of absolute"):
        load(["model.positions=disentangled"])


@pytest.fixture
def registries() -> Iterator[None]:
    """Kinds a test registers are gone after it (the registries and declarations are module globals)."""
    saved = [(table, dict(table)) for table in (NORMS, FEED_FORWARDS, ATTENTIONS, config.ATTENTION_KINDS)]
    yield
    for table, entries in saved:
        table.clear()
        table.update(entries)


def test_a_new_norm_and_ffn_kind_is_one_class_plus_a_config_value(registries: None, tiny_overrides: list[str],
                                                                  tmp_path: Path) -> None:
    @register_norm("scaled")
    class ScaledNorm(nn.Module):
        """x / rms(x) * g, with g initialised to 2 by its own reset_parameters."""

        def __init__(self, dim: int, cfg: EncoderConfig):
            super().__init__()
            self.weight = nn.Parameter(torch.empty(dim))
            self.eps = cfg.layer_norm_eps

        def reset_parameters(self) -> None:
            nn.init.constant_(self.weight, 2.0)

        def forward(self, x: Tensor) -> Tensor:
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight

    @register_ffn("relu2")
    class SquaredReluFeedForward(nn.Module):
        """relu(x W1)^2 W2."""

        def __init__(self, cfg: EncoderConfig):
            super().__init__()
            self.up = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
            self.down = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

        def forward(self, x: Tensor) -> Tensor:
            return self.down(torch.relu(self.up(x)).square())

    encoder = BertEncoder(EncoderConfig(vocab_size=50, hidden_size=16, intermediate_size=32, norm="scaled",
                                        ffn="relu2", norm_position="pre"))
    norms = [m for m in encoder.modules() if isinstance(m, ScaledNorm)]
    assert len(norms) == 1 + 2 * 2 + 1  # embeddings, two per layer, the final pre-norm
    assert all(bool((m.weight == 2).all()) for m in norms)  # init_weights ran the kind's own init
    assert sum(isinstance(m, SquaredReluFeedForward) for m in encoder.modules()) == 2

    cfg = load([*tiny_overrides, "model.norm=scaled", "model.ffn=relu2", "trainer.max_steps=2",
                "trainer.val_check_interval=1", "eval.probes=false", "run.name=kinds"])
    run(cfg)
    path = tmp_path / "runs" / "kinds" / "checkpoints" / "last.ckpt"
    assert read_checkpoint(path)["global_step"] == 2
    encoder, _, saved = load_pretrained(path)
    assert (saved.model.norm, saved.model.ffn) == ("scaled", "relu2")
    assert isinstance(encoder.layers[0].ffn_norm, ScaledNorm) and isinstance(encoder.layers[1].ffn, SquaredReluFeedForward)


class SpecRecordingAttention(AbsoluteAttention):
    """A throwaway attention kind that records the spec each layer was built from and its masks' builds."""

    built: list[LayerSpec] = []
    masks_built: list[LayerSpec] = []

    def __init__(self, cfg: EncoderConfig, spec: LayerSpec):
        super().__init__(cfg, spec)
        self.spec = spec
        SpecRecordingAttention.built.append(spec)

    @classmethod
    def build_mask(cls, spec: LayerSpec, attention_mask: Optional[Tensor]) -> Any:
        cls.masks_built.append(spec)
        return super().build_mask(spec, attention_mask)


@pytest.fixture
def spec_attention(registries: None) -> type:
    config.ATTENTION_KINDS["spy"] = ("absolute",)  # declared (torch-free), then registered
    register_attention("spy")(SpecRecordingAttention)
    SpecRecordingAttention.built, SpecRecordingAttention.masks_built = [], []
    return SpecRecordingAttention


@pytest.mark.parametrize("share", ["none", "attention", "all"])
def test_each_layer_is_built_from_its_spec(spec_attention: type, share: str) -> None:
    encoder = BertEncoder(EncoderConfig(vocab_size=50, hidden_size=16, num_layers=3, attention="spy",
                                        share_layers=share))
    expected = [0, 1, 2] if share == "none" else [0]  # a shared module is built from the first layer's spec
    assert [spec.index for spec in spec_attention.built] == expected
    assert [layer.attention.spec.index for layer in encoder.layers] == ([0, 1, 2] if share == "none" else [0] * 3)
    assert [spec.index for spec in encoder.specs] == [0, 1, 2]
    ids = torch.randint(5, 50, (2, 7))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    encoder(ids, None, mask)
    assert len(spec_attention.masks_built) == 1  # one mask per distinct layer kind, not per layer
