"""Truncated-BPTT batching, as in pytorch/examples word_language_model.

The token stream is cut into B contiguous streams (B = batch size), one per batch row; a training window
is the next `bptt` tokens of every stream. Because row b of window k+1 continues row b of window k, the
LSTM state can be carried from one window to the next (detached, so gradients stop at the window edge):
the model sees unbounded context while backpropagation stays `bptt` steps long.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
import torch

from ..errors import UserInputError


class StreamBatcher:
    """Windows of B parallel streams over a token array.

    Under distributed training the array is cut into world x B streams and rank r reads streams
    r*B .. r*B + B - 1: every rank has its own shard of the text, and the ranks' windows line up.

    Args:
        ids: the token ids (a numpy array or memory map; only windows are copied out).
        batch_size: number of streams B (per rank).
        bptt: window length T.
        rank / world: this process's shard.
    """

    def __init__(self, ids: np.ndarray, batch_size: int, bptt: int, rank: int = 0, world: int = 1) -> None:
        self.ids, self.batch_size, self.bptt = ids, batch_size, bptt
        self.grid: Optional[torch.Tensor] = None  # this rank's streams on the device (to_device)
        self.first = rank * batch_size  # the global index of this rank's first stream
        # Inputs use tokens [0, L) of each stream and targets [1, L]; the tail that does not fill
        # every stream is dropped (at most world x B tokens).
        self.stream_len = (len(ids) - 1) // (batch_size * world)
        if self.stream_len < 1:
            raise UserInputError(f"{len(ids)} tokens are too few for {batch_size} streams; give more text "
                                 "or a smaller --batch-size")

    def to_device(self, device, budget_bytes: Optional[int] = None) -> bool:
        """Keep this rank's B streams on `device` as one (B, L + 1) int32 tensor when they take at most
        `budget_bytes` (default: a quarter of the GPU's free memory), so that a window is a slice there
        and the training step waits for no copy from the host. Returns whether the streams moved.
        """
        device = torch.device(device)
        need = self.batch_size * (self.stream_len + 1) * 4
        if budget_bytes is None:
            budget_bytes = torch.cuda.mem_get_info(device)[0] // 4 if device.type == "cuda" else 0
        if need > budget_bytes:
            return False
        L = self.stream_len
        rows = [self.ids[b * L: b * L + L + 1] for b in range(self.first, self.first + self.batch_size)]
        self.grid = torch.from_numpy(np.stack(rows).astype(np.int32)).to(device)
        return True

    def __len__(self) -> int:
        """Windows per epoch (the last one may be shorter than bptt)."""
        return -(-self.stream_len // self.bptt)

    def window(self, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of window k, each (B, T) int64."""
        return self.span(k * self.bptt, self.bptt)

    def variable_windows(self, seed: int) -> List[Tuple[int, int]]:
        """(start, length) of one epoch's windows with lengths drawn as in AWD-LSTM (section 4.1): bptt with
        probability 0.95, else bptt / 2, then a normal draw around that with deviation 5, at least 5 and
        at most bptt + 20 tokens. Seeded, so a resumed run draws the same windows."""
        rng = np.random.default_rng(seed)
        out, start = [], 0
        while start < self.stream_len:
            base = self.bptt if rng.random() < 0.95 else self.bptt / 2
            n = int(min(max(5, round(rng.normal(base, 5))), self.bptt + 20))
            out.append((start, min(n, self.stream_len - start)))
            start += n
        return out

    def span(self, start: int, length: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of `length` steps from `start` in every stream, each (B, T) int64."""
        end = min(start + length, self.stream_len)
        if self.grid is not None:
            block = self.grid[:, start:end + 1].long()
            return block[:, :-1], block[:, 1:]
        L = self.stream_len
        rows = [self.ids[b * L + start: b * L + end + 1] for b in range(self.first, self.first + self.batch_size)]
        block = torch.from_numpy(np.stack(rows).astype(np.int64))
        return block[:, :-1], block[:, 1:]


def zero_state_windows(ids: np.ndarray, window: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Non-overlapping windows: inputs ids[i:i+w], targets ids[i+1:i+w+1] for i = 0, w, 2w, ...

    Every window is scored from a zero state: the metric nanoGPT reports on tinyshakespeare.
    """
    window = max(1, min(window, len(ids) - 1))  # a split shorter than one window is scored as one
    n = (len(ids) - 1) // window
    x = np.asarray(ids[: n * window], dtype=np.int64).reshape(n, window)
    y = np.asarray(ids[1: n * window + 1], dtype=np.int64).reshape(n, window)
    return torch.from_numpy(x), torch.from_numpy(y)
