"""Language-model metrics: carried-state loss, zero-state windowed loss, perplexity, bits per character."""
from __future__ import annotations

import math
from typing import Dict, Tuple

import torch
import torch.nn.functional as F

from ..data import StreamBatcher, TokenArray, zero_state_windows
from ..models import LanguageModel, detach_state


@torch.no_grad()
def stateful_loss(model: LanguageModel, ids, batch_size: int = 10, bptt: int = 256,
                  device="cpu") -> Tuple[float, int]:
    """Total nats and targets scored over `ids`, the state carried across windows (B streams).

    Args:
        model: the language model (put in eval mode here).
        ids: token ids.
        batch_size: streams; 1 scores the split as one sequence, every token with its full history.
        bptt: window length (only affects speed, not the result).
        device: where to compute.
    """
    model.eval()
    batch_size = max(1, min(batch_size, (len(ids) - 1)))
    batcher = StreamBatcher(ids, batch_size, bptt)
    state = model.init_state(batch_size, device)
    total, count = _accumulator(device), 0
    for k in range(len(batcher)):
        x, y = (t.to(device) for t in batcher.window(k))
        logits, state = model(x, state)
        # summed on the device, read once at the end: no wait for the GPU after every window
        total += F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum")
        count += y.numel()
        state = detach_state(state)
    return total.item(), count


@torch.no_grad()
def windowed_loss(model: LanguageModel, ids, window: int = 256, batch_size: int = 64,
                  device="cpu") -> Tuple[float, int]:
    """Total nats and targets over non-overlapping `window`-token windows, each from a zero state."""
    model.eval()
    x_all, y_all = zero_state_windows(ids, window)
    total, count = _accumulator(device), 0
    for i in range(0, len(x_all), batch_size):
        x, y = x_all[i:i + batch_size].to(device), y_all[i:i + batch_size].to(device)
        logits, _ = model(x)
        total += F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum")
        count += y.numel()
    return total.item(), count


def _accumulator(device) -> torch.Tensor:
    """A zero to sum losses into on `device`: float64 as Python's floats are (MPS has no float64)."""
    dtype = torch.float32 if torch.device(device).type == "mps" else torch.float64
    return torch.zeros((), dtype=dtype, device=device)


def summarize(total: float, count: int, tokens_per_char: float) -> Dict[str, float]:
    """loss (nats/token), perplexity and bits per character from a sum of nats."""
    loss = total / max(count, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "bpc": loss * tokens_per_char / math.log(2)}


def evaluate_lm(model: LanguageModel, tokens: TokenArray, *, batch_size: int = 1, window: int = 256,
                device="cpu") -> Dict[str, float]:
    """Both figures for one split.

    `loss` carries the state over the split (batch_size streams; 1 = the whole split as one sequence);
    `window_loss` scores non-overlapping `window`-token windows from a zero state (nanoGPT's metric).
    """
    tpc = len(tokens) / max(tokens.num_chars, 1)
    out = summarize(*stateful_loss(model, tokens.ids, batch_size, device=device), tpc)
    win = summarize(*windowed_loss(model, tokens.ids, window, device=device), tpc)
    out.update({f"window{window}_{k}": v for k, v in win.items()})
    out["tokens"] = len(tokens)
    return out
