"""Config dataclasses to and from JSON-ready dicts (config.json, generation_config.json, checkpoints)."""
from __future__ import annotations

from dataclasses import asdict, fields
from typing import Dict, Type, TypeVar

import torch

T = TypeVar("T", bound="JSONConfig")


class JSONConfig:
    """Mixin for dataclasses: `to_dict()`, and `from_dict()` that ignores keys a newer version wrote."""

    def to_dict(self) -> dict:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: Type[T], d: dict) -> T:
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in d.items() if k in known})


def tied_aliases(model: torch.nn.Module) -> Dict[str, str]:
    """Names in the model's state dict that hold another name's tensor (tied weights): alias -> the first
    name. Files store such a tensor once (safetensors refuses shared tensors); loading re-ties it."""
    first: Dict[tuple, str] = {}
    out: Dict[str, str] = {}
    for k, v in model.state_dict().items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))
        if v.numel() and key in first:
            out[k] = first[key]
        else:
            first.setdefault(key, k)
    return out
