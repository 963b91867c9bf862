"""W&B mode choice: never prompts, never waits on an unreachable server."""
import time

import pytest

from lightning_bert.tracking import choose_mode


@pytest.fixture
def no_wandb_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> pytest.MonkeyPatch:
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    return monkeypatch


def test_auto_without_a_key_is_offline_with_a_notice(no_wandb_env, caplog: pytest.LogCaptureFixture) -> None:
    assert choose_mode("auto", 30) == "offline"
    assert "no API key" in caplog.text


@pytest.mark.parametrize("env_mode", ["disabled", "offline"])
def test_env_wandb_mode_wins_over_auto(no_wandb_env, env_mode: str) -> None:
    no_wandb_env.setenv("WANDB_MODE", env_mode)
    assert choose_mode("auto", 30) == env_mode
    no_wandb_env.setenv("WANDB_MODE", "")  # set but empty: treated as unset
    assert choose_mode("auto", 30) == "offline"


def test_online_with_an_unreachable_server_falls_back_at_once(no_wandb_env) -> None:
    no_wandb_env.setenv("WANDB_API_KEY", "x" * 40)
    no_wandb_env.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    start = time.time()
    assert choose_mode("auto", 30) == "offline" and choose_mode("online", 30) == "offline"
    assert time.time() - start < 5
    assert choose_mode("disabled", 30) == "disabled"
