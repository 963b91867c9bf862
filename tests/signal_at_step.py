"""Test driver: `python tests/signal_at_step.py KILL|INT STEP [overrides]` trains like train.py and, once
global step STEP has finished, either SIGKILLs its whole process group (DDP ranks included: a node
failure, nothing flushed or saved on the way out) or sends itself SIGINT (Ctrl-C). The step is chosen,
not raced against a timer, so the tests built on it are deterministic."""
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_bert.train.pretrain import PretrainModule  # noqa: E402

KIND, AT_STEP = sys.argv[1], int(sys.argv[2])
finish_step = PretrainModule.on_train_batch_end


def on_train_batch_end(self, outputs, batch, batch_idx):  # noqa: ANN001, ANN202
    finish_step(self, outputs, batch, batch_idx)
    if self.global_step == AT_STEP:
        if KIND == "KILL":
            os.killpg(0, signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGINT)


PretrainModule.on_train_batch_end = on_train_batch_end
# A job started in the background by a non-interactive shell (`cmd &`, as CI runners may) inherits SIGINT
# ignored, and Python then installs no KeyboardInterrupt handler: restore the terminal's Ctrl-C.
signal.signal(signal.SIGINT, signal.default_int_handler)

if __name__ == "__main__":
    from lightning_bert.cli import train_main

    sys.exit(train_main(sys.argv[3:]))
