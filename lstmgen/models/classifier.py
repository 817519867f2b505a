"""A text classifier: embedding -> (bi)LSTM -> pooling -> dropout -> linear.

Sequences run packed, so padding never reaches the LSTM state and a text's prediction does not depend
on what it was batched with. The pooling turns the per-token outputs into one vector: the last state
(both directions' ends for a BiLSTM), the max or mean over time, or attention (a learned query scoring
each position, as in Yang et al. 2016's word attention), or ULMFiT's concat pooling [last; max; mean]
(Howard & Ruder 2018, section 3.3).

`param_groups` and `unfreeze_top` serve ULMFiT's fine-tuning of a pretrained LSTM: discriminative learning
rates (each layer group lr / 2.6 of the one above it) and gradual unfreezing (the head first, one more
group per epoch).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..errors import UserInputError, check_range
from ..nn import LSTM
from ..serial import JSONConfig

POOLINGS = ("last", "max", "mean", "attention", "concat")


@dataclass
class ClassifierConfig(JSONConfig):
    """Hyper-parameters of the classifier.

    Args:
        vocab_size: tokens in the vocabulary.
        num_labels: classes.
        embed_size: embedding width.
        hidden_size: LSTM units per direction.
        num_layers: stacked LSTM layers.
        bidirectional: read the text both ways.
        pooling: last | max | mean | attention | concat.
        dropout: on the embedding, between layers and before the output layer.
        weight_drop: DropConnect on the LSTM's hidden-to-hidden weights while training (Merity et al.
            2017; ULMFiT's classifier keeps its language model's, section 3.3).
        binary: one output unit and a sigmoid for two classes (the Keras recipe) instead of a softmax.
        backend: the LSTM backend (auto | fused | reference).
    """

    vocab_size: int
    num_labels: int = 2
    embed_size: int = 128
    hidden_size: int = 128
    num_layers: int = 1
    bidirectional: bool = False
    pooling: str = "last"
    dropout: float = 0.0
    weight_drop: float = 0.0
    binary: bool = False
    backend: str = "auto"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "embed_size", "hidden_size", "num_layers"):
            check_range(name, getattr(self, name), 1)
        check_range("num_labels", self.num_labels, 2)
        check_range("dropout", self.dropout, 0.0, 1.0)
        if self.pooling not in POOLINGS:
            raise UserInputError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if self.binary and self.num_labels != 2:
            raise UserInputError("binary (one sigmoid unit) needs exactly 2 labels")


class TextClassifierModel(nn.Module):
    """Logits (B, num_labels) — or (B, 1) when binary — for padded ids (B, T) and their lengths (B,)."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embedding = nn.Embedding(c.vocab_size, c.embed_size, padding_idx=None)
        self.drop = nn.Dropout(c.dropout)
        self.lstm = LSTM(c.embed_size, c.hidden_size, c.num_layers, batch_first=True, bidirectional=c.bidirectional,
                         dropout=c.dropout if c.num_layers > 1 else 0.0, backend=c.backend,
                         weight_drop=c.weight_drop)
        width = c.hidden_size * (2 if c.bidirectional else 1)
        self.attention = nn.Linear(width, 1, bias=False) if c.pooling == "attention" else None
        self.out = nn.Linear(3 * width if c.pooling == "concat" else width, 1 if c.binary else c.num_labels)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, ids: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        if lengths is None:
            lengths = torch.full((ids.shape[0],), ids.shape[1], dtype=torch.long)
        x = self.drop(self.embedding(ids))
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        y, (h, _) = self.lstm(packed)
        pooled = self._pool(y, h, lengths.to(ids.device))
        return self.out(self.drop(pooled))

    def _pool(self, packed_out, h: Tensor, lengths: Tensor) -> Tensor:
        c = self.config
        last = torch.cat([h[-2], h[-1]], -1) if c.bidirectional else h[-1]
        if c.pooling == "last":  # the top layer's final state; a BiLSTM's backward one has read to the start
            return last
        y, _ = pad_packed_sequence(packed_out, batch_first=True)  # (B, T, width), zeros past each length
        mask = torch.arange(y.shape[1], device=y.device)[None, :] < lengths[:, None]  # (B, T)
        biggest = y.masked_fill(~mask[..., None], float("-inf")).max(1).values
        mean = (y * mask[..., None]).sum(1) / lengths[:, None].to(y.dtype)
        if c.pooling == "max":
            return biggest
        if c.pooling == "mean":
            return mean
        if c.pooling == "concat":
            return torch.cat([last, biggest, mean], -1)
        scores = self.attention(y).squeeze(-1).masked_fill(~mask, float("-inf"))
        return (scores.softmax(-1)[..., None] * y).sum(1)

    # -- ULMFiT fine-tuning ----------------------------------------------------------------------------
    def layer_groups(self) -> List[List[nn.Parameter]]:
        """Parameters from the top down: the head, LSTM layer L-1, ..., LSTM layer 0, the embedding."""
        head = [p for n, p in self.named_parameters() if n.startswith(("out.", "attention."))]
        layers: List[List[nn.Parameter]] = [[] for _ in range(self.config.num_layers)]
        for n, p in self.lstm.named_parameters():
            layers[int(re.search(r"_l(\d+)", n).group(1))].append(p)
        return [head] + layers[::-1] + [list(self.embedding.parameters())]

    def param_groups(self, factor: float) -> List[dict]:
        """Optimizer groups with discriminative learning rates: group i from the top trains at
        lr / factor ** i (ULMFiT: factor 2.6)."""
        return [{"params": g, "lr_scale": factor ** -i} for i, g in enumerate(self.layer_groups())]

    def unfreeze_top(self, n: int) -> None:
        """Train only the top n layer groups (gradual unfreezing); the rest keep their weights."""
        for i, group in enumerate(self.layer_groups()):
            for p in group:
                p.requires_grad_(i < n)

    def load_language_model(self, lm: nn.Module) -> None:
        """Take a language model's embedding and LSTM (ULMFiT's transfer): sizes must match."""
        own = self.state_dict()
        theirs = {k: v for k, v in lm.state_dict().items() if k.startswith(("embedding.", "lstm."))}
        missing = [k for k in theirs if k not in own or own[k].shape != theirs[k].shape]
        if missing:
            raise UserInputError(f"the language model does not fit this classifier ({missing[0]}); make the "
                                 "classifier with the LM's sizes, one direction")
        self.load_state_dict(theirs, strict=False)
