"""Config dataclasses to and from JSON-ready dicts (config.json, generation_config.json, checkpoints)."""
from __future__ import annotations

from dataclasses import asdict, fields
from typing import Type, TypeVar

T = TypeVar("T", bound="JSONConfig")


class JSONConfig:
    """Mixin for dataclasses: `to_dict()`, and `from_dict()` that ignores keys a newer version wrote."""

    def to_dict(self) -> dict:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: Type[T], d: dict) -> T:
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in d.items() if k in known})
