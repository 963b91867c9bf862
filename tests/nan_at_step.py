"""Test driver: `python tests/nan_at_step.py STEP [overrides]` trains like train.py, but the word
embeddings become NaN just before optimizer step STEP + 1 runs (global_step == STEP), so the loss of
that step is non-finite: the divergence guard's input, at a chosen step."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_bert.train.pretrain import PretrainModule  # noqa: E402

AT_STEP = int(sys.argv[1])
train_step = PretrainModule.training_step


def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN202
    if self.global_step == AT_STEP and not getattr(self, "_poisoned", False):
        self._poisoned = True  # once: a skipped step may be followed by healthy ones
        self._saved = self.encoder.embeddings.word_embeddings.weight.detach().clone()
        with torch.no_grad():
            self.encoder.embeddings.word_embeddings.weight.fill_(float("nan"))
    elif getattr(self, "_saved", None) is not None:
        with torch.no_grad():
            self.encoder.embeddings.word_embeddings.weight.copy_(self._saved)
        self._saved = None
    return train_step(self, batch, batch_idx)


PretrainModule.training_step = training_step

if __name__ == "__main__":
    from lightning_bert.cli import train_main

    sys.exit(train_main(sys.argv[2:]))
