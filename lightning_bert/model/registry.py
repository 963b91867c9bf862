"""One registry type for every kind the model is built from (attention, positions, norm, feed-forward)."""
from __future__ import annotations

from typing import Callable, TypeVar

from lightning_bert.errors import UserError

Kind = TypeVar("Kind", bound=type)


class Registry(dict[str, type]):
    """name -> class for one config key. `register(name)` decorates a class; `kind(name)` looks one up."""

    def __init__(self, key: str):
        super().__init__()
        self.key = key  # the config key that names a kind, for errors

    def register(self, name: str) -> Callable[[Kind], Kind]:
        def add(cls: Kind) -> Kind:
            self[name] = cls
            return cls

        return add

    def kind(self, name: str) -> type:
        if name not in self:
            raise UserError(f"{self.key}={name!r} is not allowed; choose one of {', '.join(sorted(self))}")
        return self[name]
