"""W&B mode choice: never prompts, never waits on an unreachable server."""
import time

import pytest

from lightning_bert.train.tracking import choose_mode


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


def test_third_party_notices_are_quiet_and_nothing_else(caplog: pytest.LogCaptureFixture, tmp_path) -> None:
    import logging
    import warnings

    from lightning.pytorch.utilities import _pytree
    from lightning.pytorch.utilities.rank_zero import rank_zero_info

    from lightning_bert.config import load
    from lightning_bert.train.tracking import quiet_third_party, wandb_logger

    quiet_third_party()
    quiet_third_party()  # idempotent: one filter per logger
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        quiet_third_party()
        _pytree._tree_flatten({"a": [1, 2]})  # Lightning's LeafSpec check, deprecated by torch
        warnings.warn("an unrelated FutureWarning", FutureWarning)
    assert [str(w.message) for w in caught] == ["an unrelated FutureWarning"]
    checkpoints = logging.getLogger("lightning.pytorch.trainer.connectors.checkpoint_connector")
    with caplog.at_level(logging.INFO):
        rank_zero_info("\U0001f4a1 Tip: For seamless cloud logging and experiment tracking, try installing litlogger")
        rank_zero_info("GPU available: False, used: False")
        checkpoints.info("`weights_only` was not set, defaulting to `False`.")
        checkpoints.info("Restoring states from the checkpoint path at x.ckpt")
    assert "Tip" not in caplog.text and "weights_only" not in caplog.text
    assert "GPU available" in caplog.text and "Restoring states" in caplog.text
    assert len(logging.getLogger("lightning.pytorch.utilities.rank_zero").filters) >= 1

    # W&B: Lightning passes anonymous=None, which wandb warns about; the logger we build leaves it out.
    logger = wandb_logger(load(["logger.wandb.mode=offline"]), tmp_path, "quiet", None, {})
    assert "anonymous" not in logger._wandb_init
    logger.experiment.finish()
