"""What a decoding leaves behind and where it starts: the state kept for continuing a text, one generated
sequence, and the prefill that runs every prompt through the LSTM once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..models import LanguageModel

LSTMState = Tuple[Tensor, Tensor]


@dataclass
class DecoderState:
    """Where a text stopped: the LSTM state and the tokens chosen but not yet fed to it.

    Pass it back (`state=`) to continue the text later without running it again.
    """

    h: Tensor
    c: Tensor
    pending: List[int] = field(default_factory=list)


@dataclass
class SequenceOutput:
    """One generated sequence as ids."""

    token_ids: List[int]
    finish_reason: str  # "length" | "eos" | "stop"
    logprobs: Optional[List[float]] = None
    state: Optional[DecoderState] = None
    score: Optional[float] = None
    top_logprobs: Optional[List[Dict[int, float]]] = None


@torch.inference_mode()
def prefill(model: LanguageModel, prompts: Sequence[Sequence[int]],
            states: Optional[Sequence[Optional[DecoderState]]] = None) -> Tuple[Tensor, LSTMState]:
    """Run every prompt (after its state's pending tokens) through the LSTM: one packed call for all
    prompts that start from zero, each distinct prompt once however many rows share it.

    Returns the next-token logits (B, V) and the batched state (L, B, H) x 2.
    """
    device = next(model.parameters()).device
    parts: List[Tuple[List[int], Tensor, Tensor, Tensor]] = []  # (rows, their logits, h, c)
    fresh: dict = {}  # prompt ids -> rows that start from a zero state
    cont: List[Tuple[int, Tensor, Tensor, Tensor]] = []  # rows that continue a state, one call each
    for b, ids in enumerate(prompts):
        st = states[b] if states else None
        ids = list(st.pending if st else []) + list(ids)
        if not ids:
            raise ValueError("a prompt must have at least one token (or a state with a pending token)")
        if st is None:
            fresh.setdefault(tuple(ids), []).append(b)
            continue
        out, (h, c) = model(torch.tensor([ids], device=device), (st.h.to(device), st.c.to(device)))
        cont.append((b, out[0, -1].float(), h[:, 0], c[:, 0]))
    if cont:
        parts.append(([b for b, *_ in cont], torch.stack([x[1] for x in cont]),
                      torch.stack([x[2] for x in cont], 1), torch.stack([x[3] for x in cont], 1)))
    if fresh:
        uniq = list(fresh)
        lengths = torch.tensor([len(u) for u in uniq])
        padded = torch.zeros(len(uniq), int(lengths.max()), dtype=torch.long)
        for i, u in enumerate(uniq):
            padded[i, :len(u)] = torch.tensor(u)
        if len(uniq) == 1:
            out, (h, c) = model(padded.to(device))
        else:
            out, (h, c) = model(padded.to(device), lengths=lengths)
        last = out[torch.arange(len(uniq)), lengths.to(device) - 1].float()
        # every row of a prompt gets that prompt's result: one gather for all rows, not three per row
        src = torch.tensor([i for i, u in enumerate(uniq) for _ in fresh[u]], device=device)
        parts.append(([b for u in uniq for b in fresh[u]], last[src], h[:, src], c[:, src]))
    rows = [b for part in parts for b in part[0]]
    logits, h, c = (torch.cat([part[k] for part in parts], 0 if k == 1 else 1) for k in (1, 2, 3))
    if rows != sorted(rows):  # back into the rows' order
        order = torch.argsort(torch.tensor(rows, device=device))
        logits, h, c = logits[order], h[:, order], c[:, order]
    return logits, (h, c)
