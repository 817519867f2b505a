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


def plot_confusion(confusion, labels, path: Path, title: str = "") -> None:
    """A confusion matrix (rows: true label, columns: predicted) with the counts written in."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.2 * n + 2.5, 1.1 * n + 2), dpi=110)
    ax.imshow(confusion, cmap="Blues")
    top = max(max(row) for row in confusion) or 1
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(confusion[i][j]), ha="center", va="center",
                    color="white" if confusion[i][j] > top / 2 else "black")
    ax.set_xticks(range(n), labels, rotation=45 if n > 4 else 0)
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_attention(weights, src_tokens, tgt_tokens, path: Path, title: str = "") -> None:
    """A heatmap of attention weights: one row per target token, one column per source token."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    T, S = len(tgt_tokens), len(src_tokens)
    fig, ax = plt.subplots(figsize=(0.45 * S + 2.5, 0.4 * T + 2), dpi=110)
    ax.imshow(weights, cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(S), src_tokens, rotation=60, ha="right")
    ax.set_yticks(range(T), tgt_tokens)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    ax.set_title(title or "attention")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
