"""Training checkpoints as one safetensors file: weights, optimizer state, carried LSTM state, RNG state.

No pickle anywhere: tensors go in the safetensors body and everything else (step, epoch, optimizer
hyper-parameters) in its JSON metadata. The file is written atomically (temporary file, fsync, rename), so
a crash mid-write leaves the previous checkpoint intact.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Tuple

import torch
from safetensors.torch import load_file, save_file

from ..atomic import atomic_path


def atomic_save_tensors(path: Path, tensors: Dict[str, torch.Tensor], metadata: Dict[str, str]) -> None:
    """save_file through a temporary file, fsync and rename."""
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def optimizer_to_tensors(opt: torch.optim.Optimizer) -> Tuple[Dict[str, torch.Tensor], str]:
    """Flatten an optimizer state dict into named tensors plus JSON for the rest."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"optim.{idx}.{key}"] = val
            else:
                scalars[f"{idx}.{key}"] = val
    return tensors, json.dumps({"param_groups": sd["param_groups"], "scalars": scalars})


def optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: Dict[str, torch.Tensor], meta: str) -> None:
    info = json.loads(meta)
    state: Dict[int, dict] = {}
    for name, val in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = val
    for name, val in info["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = val
    opt.load_state_dict({"state": state, "param_groups": info["param_groups"]})


def load_checkpoint(path: Path) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """Tensors and metadata of a checkpoint file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    return load_file(str(path)), meta
