"""Quality against wall time: train tinyshakespeare character-level with a time budget and print the best
validation loss reached by each moment, with a PNG of the curve.

The figure is the carried-state validation loss in nats per character the Trainer measures at each
evaluation; at the end the model folder is also scored with 256-character windows from a zero state
(nanoGPT's figure). On a GPU, `--minutes 5` is the budget of the training-speed issue's goal.

    python benchmarks/quality.py --minutes 5 [--config configs/tinyshakespeare-char.toml] [--out runs/quality]
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import fields
from pathlib import Path

from lstmgen.presets import LM, load_settings
from lstmgen.recipes import LMRecipe, evaluate_folder, train_lm
from lstmgen.training import TrainConfig, pick_device


def recipe_from(config: str, out: str, minutes: float, overrides: dict) -> LMRecipe:
    flat = {**load_settings(config, LM), **overrides}
    train_keys = {f.name for f in fields(TrainConfig)}
    train = TrainConfig(**{**{k: v for k, v in flat.items() if k in train_keys}, "max_minutes": minutes})
    return LMRecipe(out=out, **{k: v for k, v in flat.items() if k in {f.name for f in fields(LMRecipe)} - {"train"}},
                    train=train)


def curve(log_path: Path):
    """(seconds, validation loss, best so far) at each evaluation."""
    best, rows = float("inf"), []
    for line in log_path.read_text().splitlines():
        r = json.loads(line)
        if "valid_loss" in r:
            best = min(best, r["valid_loss"])
            rows.append((r["elapsed_s"], r["valid_loss"], best))
    return rows


def plot(rows, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot([r[0] / 60 for r in rows], [r[1] for r in rows], "o-", label="validation loss", markersize=3)
    ax.plot([r[0] / 60 for r in rows], [r[2] for r in rows], "--", label="best so far")
    ax.set_xlabel("minutes of training")
    ax.set_ylabel("nats per character")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--config", default=str(Path(__file__).parent.parent / "configs" / "tinyshakespeare-char.toml"))
    p.add_argument("--out", default="runs/quality")
    p.add_argument("--set", action="append", default=[], help="override a setting, e.g. --set hidden_size=768")
    args = p.parse_args()
    overrides = {}
    for item in args.set:
        k, _, v = item.partition("=")
        overrides[k] = json.loads(v) if v[:1] in "0123456789-[{tf" or v in ("true", "false") else v
    recipe = recipe_from(args.config, args.out, args.minutes, overrides)
    t0 = time.perf_counter()
    result = train_lm(recipe, command=f"benchmarks/quality.py --minutes {args.minutes}")
    wall = time.perf_counter() - t0
    rows = curve(Path(args.out) / "training_log.jsonl")
    device = pick_device(recipe.train.device)
    name = str(device)
    if device.type == "cuda":
        import torch

        name = torch.cuda.get_device_name(device)
    print(f"tinyshakespeare char, {args.minutes:g} min budget on {name}, {result['steps']} steps, wall {wall:.0f} s")
    print(f"{'minutes':>8} {'valid loss':>11} {'best':>8}")
    for s, v, b in rows:
        print(f"{s / 60:8.2f} {v:11.4f} {b:8.4f}")
    windows = evaluate_folder(args.out, recipe.data, "valid", window=256, device=str(device))
    print(f"best carried-state valid loss {rows[-1][2] if rows else float('nan'):.4f}; "
          f"256-char windows from zero state {windows['window256_loss']:.4f} nats")
    plot(rows, Path(args.out) / "quality.png", f"tinyshakespeare char on {name}")
    print(f"curve: {Path(args.out) / 'quality.png'}")


if __name__ == "__main__":
    main()
