"""Attention over an encoder's memory: Luong's dot and general scores, Bahdanau's additive score, with
optional coverage (See et al. 2017).

    dot       score(q, m_s) = q . m_s                               (Luong et al. 2015, eq. 8)
    general   score(q, m_s) = q . W_a m_s                           (Luong et al. 2015, eq. 8)
    bahdanau  score(q, m_s) = v . tanh(W_q q + W_m m_s [+ w_c cov_s]) (Bahdanau et al. 2015; See et al. eq. 11)

a = softmax over the source positions that are not padding, context = sum_s a_s m_s. The part of a score
that depends only on the source (W_m m_s) is computed once per source by `keys()`, not once per step.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from ..errors import UserInputError

ATTENTION_KINDS = ("dot", "general", "bahdanau")


class Attention(nn.Module):
    """Scores a query against every memory position and returns the context and the weights.

    Args:
        kind: "dot", "general" or "bahdanau".
        query_size: width of the query (the decoder's hidden state).
        memory_size: width of a memory position (the encoder's output).
        coverage: add the coverage vector (the sum of earlier attention) to the score; Bahdanau only,
            as in See et al. 2017.
    """

    def __init__(self, kind: str, query_size: int, memory_size: int, coverage: bool = False) -> None:
        super().__init__()
        if kind not in ATTENTION_KINDS:
            raise UserInputError(f"attention must be one of {', '.join(ATTENTION_KINDS)} or none, got {kind!r}")
        if kind == "dot" and query_size != memory_size:
            raise UserInputError(f"dot attention needs equal query and memory sizes ({query_size} != "
                                 f"{memory_size}); use general or bahdanau")
        if coverage and kind != "bahdanau":
            raise UserInputError("coverage works with bahdanau attention (See et al. 2017); set attention "
                                 "to bahdanau")
        self.kind, self.coverage = kind, coverage
        if kind == "general":
            self.w_a = nn.Linear(query_size, memory_size, bias=False)
        elif kind == "bahdanau":
            self.w_q = nn.Linear(query_size, memory_size, bias=True)
            self.w_m = nn.Linear(memory_size, memory_size, bias=False)
            self.v = nn.Linear(memory_size, 1, bias=False)
            self.w_c = nn.Linear(1, memory_size, bias=False) if coverage else None

    def keys(self, memory: Tensor) -> Optional[Tensor]:
        """The source-only part of the score, (B, S, M) (Bahdanau), computed once per source."""
        return self.w_m(memory) if self.kind == "bahdanau" else None

    def forward(self, query: Tensor, memory: Tensor, mask: Tensor, keys: Optional[Tensor] = None,
                coverage: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """query (B, Q), memory (B, S, M), mask (B, S) true at real source tokens, coverage (B, S) ->
        context (B, M) and attention weights (B, S)."""
        if self.kind == "bahdanau":
            feats = (keys if keys is not None else self.w_m(memory)) + self.w_q(query).unsqueeze(1)
            if self.coverage:
                feats = feats + self.w_c(coverage.unsqueeze(-1))
            scores = self.v(torch.tanh(feats)).squeeze(-1)
        else:
            q = self.w_a(query) if self.kind == "general" else query
            scores = torch.bmm(memory, q.unsqueeze(-1)).squeeze(-1)
        attn = scores.float().masked_fill(~mask, float("-inf")).softmax(-1).to(memory.dtype)
        context = torch.bmm(attn.unsqueeze(1), memory).squeeze(1)
        return context, attn
