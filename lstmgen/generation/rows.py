"""The rows of a decoding batch as the host sees them: each row's objects, and the same facts as arrays.

At batch 1,024 a Python loop over the rows costs about a millisecond whatever its body, about what an
H200 needs for a third of a 32-step block in bfloat16. So what the host checks for every row between
blocks (how many tokens it may still take, its eos, its deadline, its random stream) is kept in numpy
arrays over the rows, filled once per `add()` (rows added together share their options), and the work
for a block is a few vectorised operations and two passes of `list.extend` over the rows run by map() in C.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, fields
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from .config import GenerationConfig
from .prefill import SequenceOutput


@dataclass(eq=False)
class Row:
    """One sequence being decoded. `owner` is whoever added it (a TextJob); `slot` its index there."""

    out: SequenceOutput
    cfg: GenerationConfig
    owner: object = None
    slot: int = 0
    deadline: Optional[float] = None
    active: bool = True
    feed: List[int] = field(default_factory=list)  # prompt tokens still to go through the LSTM


@dataclass
class RowArrays:
    """Per-row facts as arrays, aligned with the decoder's rows.

    Attributes:
        keys: (B,) uint64, each row's key for uniforms.py.
        draws: (B,) uint64, the uniforms each row has drawn.
        sampling: (B,) bool, whether the row samples (greedy rows draw nothing).
        max_new: (B,) int64, max_new_tokens.
        eos: (B,) int64, the eos id (-1: none).
        deadline: (B,) float64, time.monotonic() after which the row ends (inf: none).
    """

    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))
    draws: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))
    sampling: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    max_new: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    eos: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    deadline: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))

    @classmethod
    def for_rows(cls, keys: Sequence[int], cfg: GenerationConfig, deadline: Optional[float]) -> "RowArrays":
        """The arrays of rows added together: one key each, the same options and deadline."""
        n = len(keys)
        return cls(np.array(keys, dtype=np.uint64), np.zeros(n, dtype=np.uint64), np.full(n, not cfg.greedy),
                   np.full(n, cfg.max_new_tokens, dtype=np.int64),
                   np.full(n, -1 if cfg.eos_token_id is None else cfg.eos_token_id, dtype=np.int64),
                   np.full(n, np.inf if deadline is None else deadline, dtype=np.float64))

    def __add__(self, other: "RowArrays") -> "RowArrays":
        return RowArrays(**{f.name: np.concatenate([getattr(self, f.name), getattr(other, f.name)])
                            for f in fields(self)})

    def take(self, idx: Sequence[int]) -> "RowArrays":
        """The rows `idx`, in that order."""
        return RowArrays(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})


class Ahead(NamedTuple):
    """A block queued at the end of one advance() for the next: its steps, its buffers' slot, and the
    batch indices of the rows that drew uniforms for it."""

    block: object
    steps: int
    slot: int
    rows: np.ndarray


class BlockRun:
    """The host's side of one `SamplingDecoder.advance()`: the rows still live, what each may still take,
    and the tokens each has got in this call (`got()`).

    Args:
        live: batch indices of the active rows.
        outs: their output token lists (SequenceOutput.token_ids), extended as blocks are read.
        arrays: the decoder's RowArrays.
    """

    def __init__(self, live: Sequence[int], outs: List[List[int]], arrays: RowArrays) -> None:
        self.live, self.outs = np.asarray(live, dtype=np.int64), outs
        self.start = np.fromiter(map(len, outs), dtype=np.int64, count=len(outs))  # each output's length before
        self.room = arrays.max_new[self.live] - self.start
        self.eos, self.deadline = arrays.eos[self.live], arrays.deadline[self.live]
        self.pos = np.arange(len(self.live))  # the rows still live, as positions in self.live

    def got(self) -> List[List[int]]:
        """Each row's new tokens in this run, by position: what its output gained since the start."""
        return [out[k:] for out, k in zip(self.outs, self.start.tolist())]

    def rows(self) -> np.ndarray:
        """Batch indices of the rows still live."""
        return self.live[self.pos]

    def read(self, tokens: np.ndarray, now: float, history: List[List[int]]) -> Dict[int, List[Tuple[int, str]]]:
        """Give the live rows their tokens from a block: to their outputs and histories; the rows that
        end in it leave the run.

        Args:
            tokens: (K, B) the block's tokens for the whole batch.
            now: time.monotonic(), for max_time.
            history: the decoder's History.tokens.

        Returns:
            {step: [(batch index, reason)]} for the rows that end at that step of the block.
        """
        batch = self.rows()
        toks = tokens[:, batch]  # (K, n): a copy, so the block's buffer may be reused
        take, reasons = self._ends(toks, now)
        news = toks.T.tolist()  # each live row's tokens
        ends: Dict[int, List[Tuple[int, str]]] = {}
        for k, reason in reasons.items():
            news[k] = news[k][:take[k]]
            ends.setdefault(int(take[k]) - 1, []).append((int(batch[k]), reason))
        pos = self.pos.tolist()
        _extend_each([self.outs[p] for p in pos], news)
        _extend_each([history[b] for b in batch.tolist()], news)
        self.pos = np.delete(self.pos, list(reasons))
        return ends

    def _ends(self, toks: np.ndarray, now: float) -> Tuple[np.ndarray, Dict[int, str]]:
        """How many of a block's tokens (K, n) each live row takes, and {index in n: "eos" or "length"} for
        the rows that end in it (eos when it comes within what the row may take; length when
        max_new_tokens or max_time is reached)."""
        K, pos = toks.shape[0], self.pos
        room = self.room[pos]
        take = np.minimum(room, K)
        hit = toks == self.eos[pos]  # eos -1 (none) matches no token
        by_eos = hit.any(0)
        if by_eos.any():
            first = hit.argmax(0)
            by_eos &= first < take
            take = np.where(by_eos, first + 1, take)
        self.room[pos] = room - take
        ending = np.flatnonzero((room <= K) | by_eos | (self.deadline[pos] < now))
        return take, {int(k): "eos" if by_eos[k] else "length" for k in ending}


def _extend_each(lists: List[List[int]], news: List[List[int]]) -> None:
    """lists[i] += news[i] for every i, the loop run by map() in C: at 1,024 rows a Python loop over the
    rows cost about as much host time per block as a GPU takes to run the block."""
    deque(map(list.extend, lists, news), maxlen=0)
