"""The regularizers that made LSTM language models strong (Merity et al. 2017, AWD-LSTM, section 4):

- locked (variational) dropout: one mask per sequence, reused at every time step (Gal & Ghahramani 2016),
  so a unit is dropped for a whole window instead of flickering from step to step;
- embedding dropout: whole rows of the embedding matrix are dropped, i.e. every occurrence of a word in
  the batch at once (Gal & Ghahramani 2016, section 4.2);
- weight drop (DropConnect on the hidden-to-hidden matrices, Wan et al. 2013) lives in nn.lstm, where the
  dropped matrix goes to the same fused kernel;
- activation regularization (AR, an L2 penalty on the dropped outputs of the last layer) and temporal
  activation regularization (TAR, an L2 penalty on the change of the undropped outputs between steps):
  `activation_penalties`.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class LockedDropout(nn.Module):
    """Dropout with one mask per sequence, shared over time; input (B, T, F) (batch_first) or (T, B, F).

    Args:
        p: the drop probability.
        batch_first: which axis is time.
    """

    def __init__(self, p: float = 0.0, batch_first: bool = True) -> None:
        super().__init__()
        self.p, self.batch_first = float(p), batch_first

    def forward(self, x: Tensor) -> Tensor:
        return locked_dropout(x, self.p, self.training, self.batch_first)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def locked_dropout(x: Tensor, p: float, training: bool, batch_first: bool = True) -> Tensor:
    """Functional LockedDropout: a (B, 1, F) (or (1, B, F)) mask scaled by 1 / (1 - p)."""
    if not training or p <= 0.0:
        return x
    shape = (x.shape[0], 1, x.shape[2]) if batch_first else (1, x.shape[1], x.shape[2])
    mask = x.new_empty(shape).bernoulli_(1.0 - p).div_(1.0 - p)
    return x * mask


def embedding_dropout(embedding: nn.Embedding, ids: Tensor, p: float, training: bool) -> Tensor:
    """Look `ids` up in `embedding` with whole rows (words) dropped with probability p, the rest scaled
    by 1 / (1 - p). A tied output layer keeps reading the undropped matrix."""
    if not training or p <= 0.0:
        return embedding(ids)
    w = embedding.weight
    mask = w.new_empty(w.shape[0], 1).bernoulli_(1.0 - p).div_(1.0 - p)
    return F.embedding(ids, w * mask, embedding.padding_idx)


def activation_penalties(raw: Tensor, dropped: Tensor, ar: float, tar: float) -> Tensor:
    """AR: ar * mean(dropped^2); TAR: tar * mean((raw_t - raw_{t-1})^2), over (B, T, H) outputs of the
    last layer (AWD-LSTM, section 4.6)."""
    total = raw.new_zeros(())
    if ar:
        total = total + ar * dropped.float().pow(2).mean()
    if tar and raw.shape[1] > 1:
        total = total + tar * (raw[:, 1:] - raw[:, :-1]).float().pow(2).mean()
    return total
