"""The LSTM language model: embedding -> dropout -> LSTM -> dropout -> (projection) -> tied decoder.

Regularization follows AWD-LSTM (Merity et al. 2017), each part switchable: embedding dropout (whole
words), dropout on the input, between layers and on the output — locked (one mask per sequence) or
standard —, weight drop on the hidden-to-hidden matrices, and AR/TAR (training.tasks). The Mogrifier LSTM
(Melis et al. 2019) is an option of the reference backend.

Weight tying (Press & Wolf 2017; Inan et al. 2017) shares the embedding matrix with the output layer: fewer
parameters and lower perplexity. Tying needs the top layer's output as wide as the embedding. AWD-LSTM gets
that by giving its last layer as many units as the embedding (`last_layer_size`: 1150, 1150, then 400);
otherwise, when the widths differ, a linear projection maps h_t down to the embedding size first.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from ..errors import UserInputError, check_range
from ..nn import LSTM
from ..nn.regularizers import embedding_dropout, locked_dropout
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
        dropout: dropout on the embeddings, between layers and on the LSTM output (each of the three
            can be set apart below).
        tie_weights: share the embedding with the output layer.
        backend: the LSTM backend ("auto", "fused", "reference").
        dropout_input / dropout_hidden / dropout_output: the dropout on the embedded input, between LSTM
            layers and on the last layer's output (None: `dropout`). AWD-LSTM: 0.65 / 0.3 / 0.4.
        dropout_embedding: drop whole words from the embedding matrix (AWD-LSTM: 0.1).
        weight_drop: DropConnect on the hidden-to-hidden matrices (AWD-LSTM: 0.5).
        locked_dropout: one dropout mask per sequence instead of one per step (variational dropout).
        mogrifier_rounds: Mogrifier LSTM rounds (0: off; needs backend "reference").
        last_layer_size: units of the top layer, at most hidden_size (None: hidden_size). AWD-LSTM sets it
            to the embedding size, so that the tied decoder reads the LSTM without a projection. The state
            stays (num_layers, B, hidden_size): the top layer's (h, c) fill its first last_layer_size
            features, the rest is padding that no step reads.
    """

    vocab_size: int
    embed_size: Optional[int] = None
    hidden_size: int = 512
    num_layers: int = 2
    dropout: float = 0.35
    tie_weights: bool = True
    backend: str = "auto"
    dropout_input: Optional[float] = None
    dropout_hidden: Optional[float] = None
    dropout_output: Optional[float] = None
    dropout_embedding: float = 0.0
    weight_drop: float = 0.0
    locked_dropout: bool = False
    mogrifier_rounds: int = 0
    last_layer_size: Optional[int] = None

    def __post_init__(self) -> None:
        check_range("vocab_size", self.vocab_size, 1)
        check_range("hidden_size", self.hidden_size, 1)
        check_range("embed_size", self.embed_size, 1)
        check_range("num_layers", self.num_layers, 1)
        for name in ("dropout", "dropout_input", "dropout_hidden", "dropout_output", "dropout_embedding",
                     "weight_drop"):
            check_range(name, getattr(self, name), 0.0, 1.0)
            if (getattr(self, name) or 0.0) >= 1.0:
                raise UserInputError(f"{name} must be < 1")
        check_range("mogrifier_rounds", self.mogrifier_rounds, 0)
        check_range("last_layer_size", self.last_layer_size, 1, self.hidden_size)
        if self.top_size != self.hidden_size and self.num_layers < 2:
            raise UserInputError("last_layer_size narrows the top one of several layers; with one layer set "
                                 "hidden_size instead")
        if self.mogrifier_rounds and self.backend != "reference":
            raise UserInputError("the Mogrifier LSTM runs on the reference backend; set backend to reference")

    def rate(self, which: str) -> float:
        """The dropout of "input", "hidden" or "output" (its own setting, else `dropout`)."""
        own = getattr(self, f"dropout_{which}")
        return self.dropout if own is None else own

    @property
    def embedding_dim(self) -> int:
        return self.embed_size or self.hidden_size

    @property
    def top_size(self) -> int:
        """The width of the last layer's output."""
        return self.last_layer_size or self.hidden_size


class LanguageModel(nn.Module):
    """Predicts the next token at every position; the LSTM state is passed in and returned.

    Args:
        config: the hyper-parameters.
    """

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.config = config
        E, H, S, L = config.embedding_dim, config.hidden_size, config.top_size, config.num_layers
        self.embedding = nn.Embedding(config.vocab_size, E)
        lstm = partial(LSTM, batch_first=True, dropout=config.rate("hidden"), backend=config.backend,
                       weight_drop=config.weight_drop, locked_dropout=config.locked_dropout,
                       mogrifier_rounds=config.mogrifier_rounds)
        # A narrower top layer is a one-layer LSTM of its own (torch's kernels take one width per call).
        self.lstm = lstm(E, H, L if S == H else L - 1)
        self.lstm_top = lstm(H, S, 1) if S != H else None
        self.proj = nn.Linear(S, E, bias=False) if (config.tie_weights and S != E) else None
        self.decoder = nn.Linear(E if config.tie_weights else S, config.vocab_size)
        if config.tie_weights:
            self.decoder.weight = self.embedding.weight
        self._init_weights()

    def _init_weights(self) -> None:
        # Small uniform embeddings as in word_language_model; the LSTM keeps torch's U(-1/sqrt(H), 1/sqrt(H)).
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def layer_weights(self) -> Iterator[Tuple[Tensor, Tensor, Optional[Tensor], Optional[Tensor]]]:
        """(W_ih, W_hh, b_ih, b_hh) of each layer, bottom to top (biases None without them); a layer's width
        is W_hh's second dimension. For code that runs the equations itself (ONNX export, gate read-outs)."""
        for lstm in (self.lstm, self.lstm_top):
            for k in range(lstm.num_layers if lstm is not None else 0):
                yield tuple(getattr(lstm, f"{name}_l{k}", None)
                            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))

    def init_state(self, batch_size: int, device=None) -> State:
        """A zero (h, c) for `batch_size` streams."""
        c = self.config
        z = torch.zeros(c.num_layers, batch_size, c.hidden_size, device=device)
        return z, z.clone()

    def _drop(self, x: Tensor, which: str) -> Tensor:
        p = self.config.rate(which)
        if self.config.locked_dropout:
            return locked_dropout(x, p, self.training)
        return F.dropout(x, p, self.training)

    def forward(self, ids: Tensor, state: Optional[State] = None, lengths: Optional[Tensor] = None,
                return_hidden: bool = False):
        """Logits (B, T, V) for ids (B, T), and the LSTM state after the last step.

        With `lengths` (B,), row b holds lengths[b] real tokens followed by padding: the rows run as one
        packed batch and each row's state is taken after its own last token. With `return_hidden`, also
        the last layer's output before and after its dropout (for AR/TAR).
        """
        x = self._inputs(ids)
        if lengths is None:
            y, state = self._run_lstm(x, state)
        else:
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            y, state = self._run_lstm(packed, state)
            y, _ = pad_packed_sequence(y, batch_first=True, total_length=ids.shape[1])
        dropped, logits = self._outputs(y)
        if return_hidden:
            return logits, state, (y, dropped)
        return logits, state

    def _run_lstm(self, x, state: Optional[State]):
        """The LSTM layers over x (B, T, E) or a PackedSequence; with a narrower top layer, the stack below
        it, the dropout between layers, then the top layer, their states packed into one."""
        if self.lstm_top is None:
            return self.lstm(x, state)
        below, top = _split(state, self.config.top_size)
        y, below = self.lstm(x, below)
        if isinstance(y, PackedSequence):  # per-element dropout: a packed batch has no time axis to lock
            y = y._replace(data=F.dropout(y.data, self.config.rate("hidden"), self.training))
        else:
            y = self._drop(y, "hidden")
        y, top = self.lstm_top(y, top)
        return y, _join(below, top, self.config.hidden_size)

    def _inputs(self, ids: Tensor) -> Tensor:
        """What the LSTM reads: the embeddings, with embedding and input dropout."""
        return self._drop(embedding_dropout(self.embedding, ids, self.config.dropout_embedding, self.training),
                          "input")

    def _outputs(self, y: Tensor) -> Tuple[Tensor, Tensor]:
        """The last layer's output after its dropout, and the logits made from it."""
        dropped = self._drop(y, "output")
        return dropped, self.decoder(self.proj(dropped) if self.proj is not None else dropped)

    def compile_parts(self) -> "LanguageModel":
        """Run the parts before and after the LSTM through torch.compile, which fuses their elementwise work
        (dropout masks, the embedding-row mask) into few kernels; the LSTM stays cuDNN's / oneDNN's fused
        kernel, which TorchDynamo does not trace. Compiling happens at the first call (seconds).
        Returns the model."""
        if "_inputs" not in self.__dict__:  # once: a second Trainer on the same model finds them compiled
            self._inputs = torch.compile(self._inputs)  # instance attributes: the state dict is unchanged
            self._outputs = torch.compile(self._outputs)
        return self

    def step(self, ids: Tensor, state: State, out: Optional[State] = None) -> Tuple[Tensor, State]:
        """One decoding step: ids (B,) and the state -> logits (B, V) and the new state (eval mode),
        written into `out` (h, c) when given."""
        x = self.embedding(ids)
        if self.lstm_top is None:
            y, state = self.lstm.step(x, state, out)
        else:
            S = self.config.top_size
            below, top = _split(state, S)
            x, below = self.lstm.step(x, below, None if out is None else (out[0][:-1], out[1][:-1]))
            y, top = self.lstm_top.step(x, top)
            if out is None:
                state = _join(below, top, self.config.hidden_size)
            else:  # the padding of out's top layer is left as it is: no step reads it
                out[0][-1, :, :S].copy_(top[0][0])
                out[1][-1, :, :S].copy_(top[1][0])
                state = out
        if self.proj is not None:
            y = self.proj(y)
        return self.decoder(y), state


def _split(state: Optional[State], top_size: int) -> Tuple[Optional[State], Optional[State]]:
    """The states of the layers below the top and of the (narrower) top layer, from the padded one."""
    if state is None:
        return None, None
    h, c = state
    return (h[:-1], c[:-1]), (h[-1:, ..., :top_size].contiguous(), c[-1:, ..., :top_size].contiguous())


def _join(below: State, top: State, width: int) -> State:
    """One (num_layers, B, width) state: the top layer's zero-padded to the others' width."""
    pad = (0, width - top[0].shape[-1])
    return torch.cat([below[0], F.pad(top[0], pad)]), torch.cat([below[1], F.pad(top[1], pad)])


def detach_state(state: State) -> State:
    """Cut the graph at a window edge (truncated BPTT) while keeping the values."""
    return state[0].detach(), state[1].detach()
