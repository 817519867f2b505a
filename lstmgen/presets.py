"""Settings files: TOML presets shipped in the package (the repository's configs/) and the user's own.

One format for every training command: flat keys or [data]/[model]/[train] tables, named like the flags
(with - or _). A preset names its command in a top-level `command` key ("train lm", "train classify", ...),
so that `--preset keras-imdb` and `--config keras-imdb` read the same file, and a preset given to the wrong
command is one line naming the right one; the user's own files may leave it out.
"""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import List, Optional

from .errors import UserInputError

PRESETS_DIR = Path(__file__).parent / "configs"  # the repository's configs/, shipped in the package
LM = "train lm"


def presets(command: Optional[str] = None) -> List[str]:
    """The names of the bundled presets (configs/*.toml), those of `command` only when given."""
    names = sorted(p.stem for p in PRESETS_DIR.glob("*.toml")) if PRESETS_DIR.is_dir() else []
    return [n for n in names if command is None or load_toml(n).get("command") == command]


def load_toml(path: str) -> dict:
    """A TOML config file, or a bundled preset by name, as a dict (tomllib on 3.11+, tomli before)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    p = Path(path)
    if not p.is_file() and (PRESETS_DIR / f"{path}.toml").is_file():
        p = PRESETS_DIR / f"{path}.toml"
    if not p.is_file():
        raise UserInputError(f"config file {path} not found; give a TOML file or a preset name "
                             f"({', '.join(presets()) or 'none installed'})")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise UserInputError(f"{path}: not valid TOML ({e})") from None


def load_settings(path: str, command: str) -> dict:
    """The settings of a TOML file or bundled preset for `command` ("train lm", "train classify", ...), its
    tables flattened and its keys spelt with underscores.

    Args:
        path: a file or a preset name.
        command: the command reading it; a file made for another one is refused.
    """
    raw = load_toml(path)
    made_for = raw.pop("command", None)  # the user's own files need not say
    if made_for not in (None, command):
        raise UserInputError(f"{path} holds settings for `lstmgen {made_for}`, not `lstmgen {command}`")
    out: dict = {}
    for key, val in raw.items():
        items = val.items() if isinstance(val, dict) else [(key, val)]
        out.update({k.replace("-", "_"): v for k, v in items})
    return out


def recipe_from_preset(cls, preset: Optional[str], command: str, **overrides):
    """A recipe dataclass from a bundled preset (or none) and `overrides`, which win; None values are
    ignored, and training settings go in overrides["train"].

    Args:
        cls: the recipe class (its `train` field a TrainConfig).
        preset: a preset name of `command` or a TOML file, or None for the class defaults.
        command: the command the preset must be made for.
    """
    from .training import TrainConfig

    if preset is not None and preset not in presets(command) and not Path(preset).is_file():
        raise UserInputError(f"unknown preset {preset!r}; known: {', '.join(presets(command))}")
    base = load_settings(preset, command) if preset is not None else {}
    train_keys = {f.name for f in fields(TrainConfig)}
    train = {k: base.pop(k) for k in list(base) if k in train_keys}
    train.update({k: v for k, v in overrides.pop("train", {}).items() if v is not None})
    base.update({k: v for k, v in overrides.items() if v is not None})
    return cls(**base, train=TrainConfig(**train))
