"""Flags and settings shared by the commands: how a flag table becomes argparse options, and how the task
training commands (train classify / tag / seq2seq) merge a preset, `--config` and the flags.

DESIGN's rule for every command that trains: the defaults (or a preset), then a TOML file (`--config`: flat
keys or [data]/[model]/[train] tables, named like the flags with - or _), then the flags given. `train lm`
keeps its own version in cli_lm.py (bundled preset names, the checks of a resumed language model).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from typing import Dict, Tuple

from .errors import UserInputError

# TrainConfig's settings that every task's training command takes; a task's own table may override one
# (with its own default in the help).
TRAIN_FLAGS = {
    "batch-size": (int, "batch size"),
    "lr": (float, "peak learning rate"),
    "optimizer": (str, "adamw | sgd | rmsprop"),
    "weight-decay": (float, "weight decay (decoupled with adamw)"),
    "warmup-steps": (int, "steps of linear warm-up"),
    "schedule": (str, "cosine | constant (after the warm-up)"),
    "clip": (float, "gradient-norm clipping (0: none)"),
    "max-epochs": (float, "epochs"),
    "max-steps": (int, "step budget"),
    "max-minutes": (float, "time budget"),
    "eval-every": (int, "steps between validations and checkpoints (default: once an epoch)"),
    "patience": (int, "stop after this many validations without a better one"),
    "seed": (int, "random seed"),
    "device": (str, "auto | cpu | cuda | mps"),
}


def add_flags(p: argparse.ArgumentParser, flags: dict) -> None:
    """argparse options from a table {flag: (type | "flag" | "list", help)}; every default is None, so a
    handler can tell a flag given from one left out."""
    for name, (typ, help_) in flags.items():
        if typ == "flag":
            p.add_argument(f"--{name}", action="store_true", default=None, help=help_)
        elif typ == "list":
            p.add_argument(f"--{name}", action="append", default=None, help=help_ + " (repeatable)")
        else:
            p.add_argument(f"--{name}", type=typ, default=None, help=help_)


def add_task_training(p: argparse.ArgumentParser, task_flags: dict) -> None:
    """A task training command's options: its own table, --config, --resume and the shared training flags."""
    p.add_argument("--config", help="a TOML file of settings (flat keys or [data]/[model]/[train] tables, named "
                                    "like the flags); the flags given override it")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint (with "
                                                        "the settings and data it was started with)")
    add_flags(p, task_flags)
    add_flags(p, {k: v for k, v in TRAIN_FLAGS.items() if k not in task_flags})


def task_settings(args: argparse.Namespace, task_flags: dict, recipe_cls, command: str,
                  extra: Tuple[str, ...] = ()) -> Tuple[dict, dict]:
    """(recipe settings, TrainConfig settings): the --config file's, overlaid with the flags given.

    Args:
        args: the parsed command line.
        task_flags: the command's own flag table.
        recipe_cls: its recipe dataclass (the keys it takes besides `train`).
        command: its name in `lstmgen train COMMAND` (for the error message).
        extra: the command's further options that a --config may set too (data, out, preset, ...).
    """
    from .presets import load_settings
    from .training import TrainConfig

    merged: dict = load_settings(args.config, f"train {command}") if args.config else {}
    for name in (*task_flags, *TRAIN_FLAGS, *extra):
        dest = name.replace("-", "_")
        if getattr(args, dest, None) is not None:
            merged[dest] = getattr(args, dest)
    train_keys = {f.name for f in fields(TrainConfig)}
    recipe_keys = {f.name for f in fields(recipe_cls)} - {"train"}
    unknown = set(merged) - train_keys - recipe_keys - {e.replace("-", "_") for e in extra}
    if unknown:
        raise UserInputError(f"unknown setting(s) {', '.join(sorted(unknown))} in --config; see "
                             f"lstmgen train {command} -h")
    train = {k: merged.pop(k) for k in list(merged) if k in train_keys and k not in recipe_keys}
    return merged, train


def exit_code(result: Dict) -> int:
    """0, or 130 after saying how to continue a run stopped with Ctrl-C (its checkpoint is saved)."""
    if not result.get("interrupted"):
        return 0
    print("lstmgen: interrupted; checkpoint saved — continue with the same command plus --resume", file=sys.stderr)
    return 130
