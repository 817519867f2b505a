"""Loss curves as PNG (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable


def plot_loss(records: Iterable[dict], path: Path, title: str = "") -> None:
    """Training loss per logged step and validation loss per evaluation, against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = list(records)
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    valid = [(r["step"], r["valid_loss"]) for r in records if "valid_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        ax.plot(*zip(*train), label="train", color="#1f77b4", linewidth=1)
    if valid:
        ax.plot(*zip(*valid), "o-", label="valid", color="#d62728", markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title or "loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
