"""The model folder (DESIGN.md): config.json, model.safetensors, tokenizer.json, generation_config.json,
README.md (the model card), and from training training_log.jsonl and loss.png; written atomically, read
from JSON and safetensors only. Nothing is unpickled, so a folder from a stranger cannot run code.

Every pipeline (text generation, classification, tagging, translation) saves and opens its folder here.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .atomic import atomic_path, atomic_write_bytes
from .errors import ModelFolderError
from .serial import tied_aliases

PRETRAINED_DIR = Path(__file__).parent / "pretrained"
REQUIRED = ("config.json", "model.safetensors", "tokenizer.json")


def bundled_models() -> List[str]:
    """Names of the models shipped inside the package."""
    if not PRETRAINED_DIR.is_dir():
        return []
    return sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / "config.json").is_file())


def resolve_model_dir(name_or_dir) -> Path:
    """A model folder path, or a bundled model's name, to its folder."""
    p = Path(name_or_dir).expanduser()
    if p.is_dir():
        return p
    if str(name_or_dir) in bundled_models():
        return PRETRAINED_DIR / str(name_or_dir)
    known = ", ".join(bundled_models()) or "none"
    raise ModelFolderError(f"no model folder {str(name_or_dir)!r}; give a folder made by `lstmgen train` "
                           f"or a bundled model name ({known})")


def read_json(path: Path) -> dict:
    """A JSON object from a model folder, or a ModelFolderError naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFolderError(f"{path}: malformed JSON ({e}); restore the file from the original model "
                               "folder or retrain") from None
    if not isinstance(data, dict):
        raise ModelFolderError(f"{path}: expected a JSON object; restore the file from the original folder")
    return data


def state_dict_for_saving(model: torch.nn.Module, dtype: Optional[torch.dtype] = None) -> Dict[str, torch.Tensor]:
    """The model's tensors, each tied weight once (a tied output layer is the embedding; safetensors stores
    a tensor once), optionally cast (float16 halves a bundled model's size)."""
    aliases = tied_aliases(model)
    out = {}
    for k, v in model.state_dict().items():
        if k in aliases:
            continue
        v = v.detach().cpu()
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise ValueError(f"refusing to save {k}: it holds NaN or inf values")
        out[k] = (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
    return out


def save_folder(out_dir, model: torch.nn.Module, tokenizer_json: str, config: dict, *,
                dtype: Optional[torch.dtype] = None, extra: Optional[Dict[str, str]] = None,
                card: bool = True) -> Path:
    """Write a model folder: model.safetensors, tokenizer.json, config.json, `extra` files and the model card
    (README.md, last: it describes the files before it). Each file is written atomically.

    Args:
        out_dir: the folder (created if needed).
        model: its weights are saved (a tied decoder once).
        tokenizer_json: the tokenizer.json text.
        config: config.json's content (model_type first).
        dtype: store floating-point weights in this type (e.g. torch.float16); loading casts back.
        extra: more files, name -> text (generation_config.json).
        card: write README.md.
    """
    from .modelcard import model_card

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(state_dict_for_saving(model, dtype), str(tmp), metadata={"format": "pt"})
    files = {"tokenizer.json": tokenizer_json, "config.json": json.dumps(config, indent=2), **(extra or {})}
    for name, text in files.items():
        atomic_write_bytes(out / name, text.encode("utf-8"))
    if card:
        atomic_write_bytes(out / "README.md", model_card(config, out).encode("utf-8"))
    return out


def open_folder(name_or_dir) -> Tuple[Path, dict]:
    """A model folder's path and config.json, after refusing pickles and checking the required files."""
    d = resolve_model_dir(name_or_dir)
    refuse_pickles(d)
    for name in REQUIRED:
        if not (d / name).is_file():
            raise ModelFolderError(f"model folder {d}: missing {name}; copy the whole folder written by "
                                   "`lstmgen train` (it holds config.json, model.safetensors, tokenizer.json)")
    return d, read_json(d / "config.json")


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def refuse_pickles(d: Path) -> None:
    """Refuse a folder holding pickle files: unpickling runs code, and lstmgen never does it."""
    found = sorted(p.name for p in d.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if found:
        raise ModelFolderError(f"refusing to load {d}: {found[0]} is a pickle file, and loading pickles can run "
                               "code; lstmgen reads only JSON and safetensors — remove it, or convert those "
                               "weights to safetensors")


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load safetensors weights into `model` (cast to its dtype), with a clear error on any mismatch."""
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelFolderError(f"{path}: not a readable safetensors file ({e}); restore it from the original "
                               "model folder") from None
    own = model.state_dict()
    for alias, name in tied_aliases(model).items():
        if name in tensors:
            tensors[alias] = tensors[name]
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    bad = [k for k in own if k in tensors and tuple(tensors[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad:
        what = "; ".join(x for x in (f"missing {missing[:3]}" if missing else "",
                                     f"unexpected {unexpected[:3]}" if unexpected else "",
                                     f"wrong shape {bad[:3]}" if bad else "") if x)
        raise ModelFolderError(f"{path}: weights do not match config.json ({what}); the files come from "
                               "different models")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in tensors.items()})
