"""A linear-chain conditional random field over per-token tag scores (Lafferty et al. 2001), as in the
BiLSTM-CRF tagger of Lample et al. (2016).

A tag sequence y scores  start[y_1] + sum_t emit[t, y_t] + sum_t trans[y_{t-1}, y_t] + end[y_n];  the
model's probability of y is exp(score(y)) / Z, with log Z from the forward algorithm and the best y from
Viterbi, both O(n T^2). Masks let sentences of different lengths share a batch. Transitions a tagging
scheme forbids (I-PER after O in BIO, say) can be fixed to -inf with `allowed`.
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor, nn


class LinearChainCRF(nn.Module):
    """Args:
        num_tags: T.
        allowed: optional (T, T) bool, allowed[i, j] = tag j may follow tag i; with `allowed_start` and
            `allowed_end` (T,), the tags a sequence may begin and end with.
    """

    def __init__(self, num_tags: int, allowed: Optional[Tensor] = None, allowed_start: Optional[Tensor] = None,
                 allowed_end: Optional[Tensor] = None) -> None:
        super().__init__()
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.zeros(num_tags, num_tags))
        self.start = nn.Parameter(torch.zeros(num_tags))
        self.end = nn.Parameter(torch.zeros(num_tags))
        for name, mask in (("trans_mask", allowed), ("start_mask", allowed_start), ("end_mask", allowed_end)):
            shape = (num_tags, num_tags) if name == "trans_mask" else (num_tags,)
            m = torch.ones(shape, dtype=torch.bool) if mask is None else mask.bool()
            self.register_buffer(name, m, persistent=False)

    def _scores(self):
        neg = torch.finfo(self.transitions.dtype).min / 4  # -inf would make 0 * inf = nan in gradients
        return (self.transitions.masked_fill(~self.trans_mask, neg), self.start.masked_fill(~self.start_mask, neg),
                self.end.masked_fill(~self.end_mask, neg))

    def log_partition(self, emissions: Tensor, mask: Tensor) -> Tensor:
        """log Z (B,) for emissions (B, L, T) and mask (B, L) (each row's True entries come first)."""
        trans, start, end = self._scores()
        alpha = start + emissions[:, 0]  # (B, T)
        for t in range(1, emissions.shape[1]):
            nxt = torch.logsumexp(alpha[:, :, None] + trans[None] + emissions[:, t, None, :], dim=1)
            alpha = torch.where(mask[:, t, None], nxt, alpha)
        return torch.logsumexp(alpha + end, dim=-1)

    def score(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """The score (B,) of the given tag sequences (B, L)."""
        trans, start, end = self._scores()
        B, L, _ = emissions.shape
        emit = emissions.gather(-1, tags[..., None]).squeeze(-1)  # (B, L)
        s = start[tags[:, 0]] + emit[:, 0]
        if L > 1:
            step = trans[tags[:, :-1], tags[:, 1:]] + emit[:, 1:]
            s = s + (step * mask[:, 1:]).sum(1)
        last = tags.gather(1, (mask.sum(1) - 1).clamp(min=0)[:, None]).squeeze(1)
        return s + end[last]

    def nll(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """Mean negative log-likelihood of the gold tags over the batch."""
        return (self.log_partition(emissions, mask) - self.score(emissions, tags, mask)).mean()

    @torch.no_grad()
    def viterbi(self, emissions: Tensor, mask: Tensor) -> List[List[int]]:
        """The best tag sequence of each row (as long as its mask)."""
        trans, start, end = self._scores()
        B, L, T = emissions.shape
        best = start + emissions[:, 0]
        back = []
        for t in range(1, L):
            cand = best[:, :, None] + trans[None]  # (B, from, to)
            val, arg = cand.max(1)
            nxt = val + emissions[:, t]
            keep = mask[:, t, None]
            best = torch.where(keep, nxt, best)
            back.append(torch.where(keep, arg, torch.arange(T, device=arg.device).expand(B, T)))
        best = best + end
        out = []
        lengths = mask.sum(1).tolist()
        for b in range(B):
            tag = int(best[b].argmax())
            path = [tag]
            for t in range(lengths[b] - 1, 0, -1):
                tag = int(back[t - 1][b, tag])
                path.append(tag)
            out.append(path[::-1])
        return out


def bio_constraints(tags: List[str]):
    """(allowed, allowed_start, allowed_end) for BIO or BIOES tag names: I-X only after B-X or I-X (and,
    for BIOES, E-X/S-X rules), as in conlleval's chunk definition."""
    T = len(tags)

    def split(t: str):
        return (t[0], t[2:]) if "-" in t else (t, "")

    allowed = torch.ones(T, T, dtype=torch.bool)
    start = torch.ones(T, dtype=torch.bool)
    end = torch.ones(T, dtype=torch.bool)
    bioes = any(t.startswith(("E-", "S-")) for t in tags)
    for j, tj in enumerate(tags):
        pj, lj = split(tj)
        if pj in ("I", "E"):
            start[j] = False
        if bioes and pj in ("B", "I"):
            end[j] = False
        for i, ti in enumerate(tags):
            pi, li = split(ti)
            if pj in ("I", "E"):  # continues a chunk: only after the same chunk's B or I
                allowed[i, j] = pi in ("B", "I") and li == lj
            elif bioes and pi in ("B", "I"):  # an open chunk must go on
                allowed[i, j] = False
    return allowed, start, end
