"""Pretraining examples -> one padded batch (the documented batch keys of data/datamodule.py)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lightning_bert.data.masking import IGNORE
from lightning_bert.data.tokenizer import PAD_ID

PAD_VALUES = {"input_ids": PAD_ID, "token_type_ids": 0, "attention_mask": 0, "mlm_labels": IGNORE,
              "sbo_left": -1, "sbo_right": -1, "mlm_chars": 0,
              "plm_order": -1,
              "document_ids": -1, "position_ids": 0}  # data.pack_attention=document


def collate_pretraining(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Pad every per-token array to the longest example; stack the rest."""
    length = max(len(item["input_ids"]) for item in items)
    batch = {}
    for key, first in items[0].items():
        if np.ndim(first) == 0:
            batch[key] = torch.as_tensor(np.array([item[key] for item in items]))
            continue
        out = np.full((len(items), length), PAD_VALUES[key], dtype=np.int64)
        for row, item in enumerate(items):
            out[row, : len(item[key])] = item[key]
        batch[key] = torch.from_numpy(out)
    return batch
