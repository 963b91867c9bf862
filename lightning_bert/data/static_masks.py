"""Static masking (BERT): masks drawn once per (duplicate, example) and stored beside the token cache.

Only predicted positions are stored (about 15% of tokens): the position, the id the model is shown
there and, for spans, the SBO boundary positions. Every epoch, restart and DDP rank reads the same masks.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from tqdm.auto import tqdm

from lightning_bert.data.cache import build_once
from lightning_bert.data.masking import IGNORE

MaskFn = Callable[[int], dict[str, np.ndarray]]  # item index -> mask_example output for that item


@dataclass
class StoredMasks:
    offsets: np.ndarray  # int64 [items + 1]: item i's predictions are rows offsets[i]:offsets[i+1]
    positions: np.ndarray  # int32 positions in the encoded example
    shown: np.ndarray  # int32 id shown to the model there ([MASK], a random id, or the original)
    sbo_left: Optional[np.ndarray] = None  # int32 span boundaries (span masking only)
    sbo_right: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def apply(self, index: int, input_ids: np.ndarray) -> dict[str, np.ndarray]:
        """The stored mask of item `index` on its unmasked ids: the same dict mask_example returns."""
        rows = slice(int(self.offsets[index]), int(self.offsets[index + 1]))
        positions = self.positions[rows]
        ids = input_ids.copy()
        labels = np.full(len(input_ids), IGNORE, dtype=np.int64)
        labels[positions] = input_ids[positions]
        ids[positions] = self.shown[rows]
        out = {"input_ids": ids, "mlm_labels": labels}
        if self.sbo_left is not None:
            for name, stored in (("sbo_left", self.sbo_left), ("sbo_right", self.sbo_right)):
                out[name] = np.full(len(input_ids), -1, dtype=np.int64)
                out[name][positions] = stored[rows]
        return out


def _draw_all(mask_fn: MaskFn, items: int, out: Path) -> None:
    counts, columns = np.zeros(items, dtype=np.int64), {"positions": [], "shown": [], "sbo_left": [], "sbo_right": []}
    for index in tqdm(range(items), desc="drawing static masks", unit="example", mininterval=1.0):
        item = mask_fn(index)
        positions = np.flatnonzero(item["mlm_labels"] != IGNORE)
        counts[index] = len(positions)
        columns["positions"].append(positions)
        columns["shown"].append(item["input_ids"][positions])
        if "sbo_left" in item:
            columns["sbo_left"].append(item["sbo_left"][positions])
            columns["sbo_right"].append(item["sbo_right"][positions])
    np.save(out / "offsets.npy", np.concatenate([[0], np.cumsum(counts)]))
    for name, parts in columns.items():
        if parts:
            np.save(out / f"{name}.npy", np.concatenate(parts).astype(np.int32))


def stored_masks(mask_fn: MaskFn, items: int, key: str, cache_dir: Path) -> StoredMasks:
    """Draw the masks of all `items` once (keyed by everything they depend on), then map them from disk."""
    path = cache_dir / f"masks-{key}"
    build_once(path, lambda tmp: _draw_all(mask_fn, items, tmp), "static masks")

    def load(name: str) -> Optional[np.ndarray]:
        file = path / f"{name}.npy"
        return np.load(file, mmap_mode="r") if file.is_file() else None

    masks = StoredMasks(np.load(path / "offsets.npy"), load("positions"), load("shown"), load("sbo_left"),
                        load("sbo_right"))
    if masks.positions is None:  # no prediction at all (degenerate tiny data): keep shapes valid
        masks.positions = masks.shown = np.zeros(0, dtype=np.int32)
    return masks
