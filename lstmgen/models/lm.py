"""The LSTM language model: embedding -> dropout -> LSTM -> dropout -> (projection) -> tied decoder.

Weight tying (Press & Wolf 2017; Inan et al. 2017) shares the embedding matrix with the output layer: fewer
parameters and lower perplexity. When the LSTM's hidden size differs from the embedding size, a linear
projection maps h_t down to the embedding size first, so tying still applies.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..errors import UserInputError, check_range
from ..nn import LSTM
from ..serial import JSONConfig

State = Tuple[Tensor, Tensor]


@dataclass
class LMConfig(JSONConfig):
    """Hyper-parameters of LanguageModel.

    Args:
        vocab_size: number of token ids.
        embed_size: embedding width (None: the hidden size, so tying needs no projection).
        hidden_size: LSTM width.
        num_layers: stacked LSTM layers.
        dropout: dropout on the embeddings, between layers and on the LSTM output.
        tie_weights: share the embedding with the output layer.
        backend: the LSTM backend ("auto", "fused", "reference").
    """

    vocab_size: int
    embed_size: Optional[int] = None
    hidden_size: int = 512
    num_layers: int = 2
    dropout: float = 0.35
    tie_weights: bool = True
    backend: str = "auto"

    def __post_init__(self) -> None:
        check_range("vocab_size", self.vocab_size, 1)
        check_range("hidden_size", self.hidden_size, 1)
        check_range("embed_size", self.embed_size, 1)
        check_range("num_layers", self.num_layers, 1)
        check_range("dropout", self.dropout, 0.0, 1.0)
        if self.dropout >= 1.0:
            raise UserInputError("dropout must be < 1")

    @property
    def embedding_dim(self) -> int:
        return self.embed_size or self.hidden_size



class LanguageModel(nn.Module):
    """Predicts the next token at every position; the LSTM state is passed in and returned.

    Args:
        config: the hyper-parameters.
    """

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.config = config
        E, H = config.embedding_dim, config.hidden_size
        self.embedding = nn.Embedding(config.vocab_size, E)
        self.drop = nn.Dropout(config.dropout)
        self.lstm = LSTM(E, H, config.num_layers, batch_first=True, dropout=config.dropout,
                         backend=config.backend)
        self.proj = nn.Linear(H, E, bias=False) if (config.tie_weights and H != E) else None
        self.decoder = nn.Linear(E if config.tie_weights else H, config.vocab_size)
        if config.tie_weights:
            self.decoder.weight = self.embedding.weight
        self._init_weights()

    def _init_weights(self) -> None:
        # Small uniform embeddings as in word_language_model; the LSTM keeps torch's U(-1/sqrt(H), 1/sqrt(H)).
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def init_state(self, batch_size: int, device=None) -> State:
        """A zero (h, c) for `batch_size` streams."""
        c = self.config
        z = torch.zeros(c.num_layers, batch_size, c.hidden_size, device=device)
        return z, z.clone()

    def forward(self, ids: Tensor, state: Optional[State] = None,
                lengths: Optional[Tensor] = None) -> Tuple[Tensor, State]:
        """Logits (B, T, V) for ids (B, T), and the LSTM state after the last step.

        With `lengths` (B,), row b holds lengths[b] real tokens followed by padding: the rows run as one
        packed batch and each row's state is taken after its own last token.
        """
        x = self.drop(self.embedding(ids))
        if lengths is None:
            y, state = self.lstm(x, state)
        else:
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            y, state = self.lstm(packed, state)
            y, _ = pad_packed_sequence(y, batch_first=True, total_length=ids.shape[1])
        y = self.drop(y)
        if self.proj is not None:
            y = self.proj(y)
        return self.decoder(y), state

    def step(self, ids: Tensor, state: State) -> Tuple[Tensor, State]:
        """One decoding step: ids (B,) and the state -> logits (B, V) and the new state (eval mode)."""
        y, state = self.lstm.step(self.embedding(ids), state)
        if self.proj is not None:
            y = self.proj(y)
        return self.decoder(y), state


def detach_state(state: State) -> State:
    """Cut the graph at a window edge (truncated BPTT) while keeping the values."""
    return state[0].detach(), state[1].detach()
