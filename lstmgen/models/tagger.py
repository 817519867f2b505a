"""A BiLSTM-CRF sequence tagger with character features (Lample et al. 2016, "Neural Architectures for
Named Entity Recognition").

Each word is its (lowercased) word embedding joined with the final states of a character BiLSTM read
over the word as written, so capitals, suffixes and unseen words still carry information; a BiLSTM over
the sentence gives each word its context; a linear layer scores every tag; a CRF picks the best sequence.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..errors import check_range
from ..nn import LSTM
from ..nn.crf import LinearChainCRF, bio_constraints
from ..serial import JSONConfig


@dataclass
class TaggerConfig(JSONConfig):
    """Hyper-parameters of the tagger.

    Args:
        word_vocab: words (lowercased) in the vocabulary, <unk> and <pad> included.
        char_vocab: characters, <unk> and <pad> included.
        tags: the tag names (their order is the CRF's).
        word_dim: word embedding size.
        char_dim: character embedding size.
        char_hidden: character BiLSTM units per direction (0: no character features).
        hidden_size: sentence BiLSTM units per direction.
        num_layers: sentence BiLSTM layers.
        dropout: on the word representations and on the BiLSTM's output.
        constrained: forbid the transitions the tag scheme does not allow (I-PER after O, ...).
    """

    word_vocab: int
    char_vocab: int
    tags: List[str]
    word_dim: int = 100
    char_dim: int = 25
    char_hidden: int = 25
    hidden_size: int = 100
    num_layers: int = 1
    dropout: float = 0.5
    constrained: bool = True
    backend: str = "auto"

    def __post_init__(self) -> None:
        for name in ("word_vocab", "char_vocab", "word_dim", "char_dim", "hidden_size", "num_layers"):
            check_range(name, getattr(self, name), 1)
        check_range("char_hidden", self.char_hidden, 0)
        check_range("dropout", self.dropout, 0.0, 1.0)
        check_range("tags", len(self.tags), 2)


class BiLSTMCRFTagger(nn.Module):
    """Tag scores and the CRF over words (B, L) with their characters (B, L, C)."""

    def __init__(self, config: TaggerConfig) -> None:
        super().__init__()
        self.config = c = config
        self.words = nn.Embedding(c.word_vocab, c.word_dim)
        width = c.word_dim
        if c.char_hidden:
            self.chars = nn.Embedding(c.char_vocab, c.char_dim)
            self.char_lstm = LSTM(c.char_dim, c.char_hidden, batch_first=True, bidirectional=True, backend=c.backend)
            width += 2 * c.char_hidden
        self.drop = nn.Dropout(c.dropout)
        self.lstm = LSTM(width, c.hidden_size, c.num_layers, batch_first=True, bidirectional=True,
                         dropout=c.dropout if c.num_layers > 1 else 0.0, backend=c.backend)
        self.scores = nn.Linear(2 * c.hidden_size, len(c.tags))
        allowed = bio_constraints(c.tags) if c.constrained else (None, None, None)
        self.crf = LinearChainCRF(len(c.tags), *allowed)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _char_features(self, chars: Tensor, char_lengths: Tensor) -> Tensor:
        """(B, L, 2 * char_hidden): the character BiLSTM's final states for every word."""
        B, L, C = chars.shape
        flat, lengths = chars.view(B * L, C), char_lengths.view(B * L)
        real = lengths > 0  # padding positions have no characters
        out = torch.zeros(B * L, 2 * self.config.char_hidden, device=chars.device)
        if bool(real.any()):
            x = self.chars(flat[real])
            packed = pack_padded_sequence(x, lengths[real].cpu(), batch_first=True, enforce_sorted=False)
            _, (h, _) = self.char_lstm(packed)
            out[real] = torch.cat([h[-2], h[-1]], -1)
        return out.view(B, L, -1)

    def emissions(self, words: Tensor, chars: Tensor, char_lengths: Tensor, lengths: Tensor) -> Tensor:
        """(B, L, num_tags) tag scores."""
        x = self.words(words)
        if self.config.char_hidden:
            x = torch.cat([x, self._char_features(chars, char_lengths)], -1)
        packed = pack_padded_sequence(self.drop(x), lengths.cpu(), batch_first=True, enforce_sorted=False)
        y, _ = self.lstm(packed)
        y, _ = pad_packed_sequence(y, batch_first=True, total_length=words.shape[1])
        return self.scores(self.drop(y))

    def loss(self, words, chars, char_lengths, lengths, tags) -> Tensor:
        mask = torch.arange(words.shape[1], device=words.device)[None] < lengths.to(words.device)[:, None]
        return self.crf.nll(self.emissions(words, chars, char_lengths, lengths).float(), tags, mask)

    def decode(self, words, chars, char_lengths, lengths) -> List[List[int]]:
        mask = torch.arange(words.shape[1], device=words.device)[None] < lengths.to(words.device)[:, None]
        return self.crf.viterbi(self.emissions(words, chars, char_lengths, lengths).float(), mask)

    def forward(self, words, chars, char_lengths, lengths, tags: Optional[Tensor] = None):
        return self.loss(words, chars, char_lengths, lengths, tags) if tags is not None else \
            self.decode(words, chars, char_lengths, lengths)
