"""The LSTM, written from its equations, with torch.nn.LSTM's kernels as the fast backend.

`LSTM` subclasses torch.nn.LSTM, so parameter names, shapes, gate order (i, f, g, o) and the state-dict
layout are torch's own and either backend loads the other's weights. `backend="fused"` calls torch's
kernels (cuDNN on GPU, oneDNN on CPU); `backend="reference"` runs the equations below step by step in
plain tensor operations: readable, differentiable in float64 for gradcheck, and the place where
variants the fused kernel cannot run (gate read-outs, Mogrifier, ...) live.

    i_t = sigmoid(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)
    f_t = sigmoid(W_if x_t + b_if + W_hf h_{t-1} + b_hf)
    g_t = tanh   (W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)
    o_t = sigmoid(W_io x_t + b_io + W_ho h_{t-1} + b_ho)
    c_t = f_t * c_{t-1} + i_t * g_t
    h_t = o_t * tanh(c_t)
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import _VF, Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from ..errors import UserInputError
from .regularizers import locked_dropout

BACKENDS = ("auto", "fused", "reference")
State = Tuple[Tensor, Tensor]


def lstm_gates(x_proj: Tensor, h: Tensor, w_hh: Tensor, b_hh: Optional[Tensor]) -> Tuple[Tensor, ...]:
    """The input, forget, cell-candidate and output gates (i, f, g, o) of one step, in torch's order."""
    gates = x_proj + h @ w_hh.t()
    if b_hh is not None:
        gates = gates + b_hh
    i, f, g, o = gates.chunk(4, dim=-1)
    return torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)


def lstm_cell(x_proj: Tensor, h: Tensor, c: Tensor, w_hh: Tensor, b_hh: Optional[Tensor]) -> State:
    """One step of the equations. `x_proj` is W_ih x_t + b_ih, computed for all steps at once."""
    i, f, g, o = lstm_gates(x_proj, h, w_hh, b_hh)
    c = f * c + i * g
    h = o * torch.tanh(c)
    return h, c


def _reverse_within_lengths(x: Tensor, lengths: Optional[Tensor]) -> Tensor:
    """Reverse (T, B, ...) along time, each sequence within its own length (padding stays at the end)."""
    if lengths is None:
        return x.flip(0)
    T = x.shape[0]
    t = torch.arange(T, device=x.device).unsqueeze(1)  # (T, 1)
    L = lengths.to(x.device).unsqueeze(0)  # (1, B)
    idx = torch.where(t < L, L - 1 - t, t)  # padded steps map to themselves
    idx = idx.view(T, -1, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(0, idx)


class LSTM(nn.LSTM):
    """torch.nn.LSTM with a choice of backend over one set of parameters.

    Args:
        input_size: features per input step.
        hidden_size: features of h and c.
        num_layers: stacked layers.
        batch_first: inputs and outputs are (B, T, F) instead of (T, B, F).
        dropout: dropout on the outputs of every layer but the last (training only).
        bidirectional: run a second LSTM over the reversed sequence and concatenate.
        backend: "fused" (torch's kernels), "reference" (the equations) or "auto" (fused).
        weight_drop: DropConnect on the hidden-to-hidden matrices while training (AWD-LSTM): one mask per
            forward call, and the dropped matrices go to the same fused kernel.
        locked_dropout: the dropout between layers uses one mask per sequence (variational dropout).
        mogrifier_rounds: Mogrifier LSTM (Melis et al. 2019): before each step, x and h gate each other
            in this many alternating rounds (x <- 2 sigmoid(Q h) * x, h <- 2 sigmoid(R x) * h). Reference
            backend only: the fused kernel has no such step.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, *, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 backend: str = "auto", weight_drop: float = 0.0, locked_dropout: bool = False,
                 mogrifier_rounds: int = 0, device=None, dtype=None) -> None:
        if backend not in BACKENDS:
            raise UserInputError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if mogrifier_rounds and (backend != "reference" or bidirectional):
            raise UserInputError("the Mogrifier LSTM runs on the reference backend, left to right; set "
                                 "backend to reference")
        if not 0.0 <= weight_drop < 1.0:
            raise UserInputError(f"weight_drop must be in [0, 1), got {weight_drop}")
        # torch warns about dropout with one layer; it is simply unused there, as in torch.
        super().__init__(input_size, hidden_size, num_layers, bias=bias, batch_first=batch_first,
                         dropout=dropout if num_layers > 1 else 0.0, bidirectional=bidirectional,
                         device=device, dtype=dtype)
        self.dropout = float(dropout)
        self.backend = backend
        self.weight_drop, self.locked_dropout = float(weight_drop), bool(locked_dropout)
        self.mogrifier_rounds = int(mogrifier_rounds)
        if mogrifier_rounds:
            # Round i (from 1) gates x with h when odd (Q: H -> input) and h with x when even (R: input -> H).
            self.mogrifier = nn.ModuleList(
                nn.ModuleList(nn.Linear(hidden_size, n_in) if i % 2 == 0 else nn.Linear(n_in, hidden_size)
                              for i in range(mogrifier_rounds))
                for n_in in [input_size] + [hidden_size] * (num_layers - 1))

    def extra_repr(self) -> str:
        extra = f", backend={self.backend!r}"
        if self.weight_drop:
            extra += f", weight_drop={self.weight_drop}"
        if self.locked_dropout:
            extra += ", locked_dropout=True"
        return super().extra_repr() + extra

    def forward(self, input, hx: Optional[State] = None):  # noqa: A002 - torch's name
        if self.backend == "reference":
            return self._reference_forward(input, hx)
        if isinstance(input, PackedSequence) and input.data.device.type == "cpu" and not self.proj_size:
            return self._packed_by_segments(input, hx)
        locked = self.locked_dropout and self.dropout > 0 and self.num_layers > 1
        if not self.training or not (self.weight_drop or locked):
            return super().forward(input, hx)
        if locked and not isinstance(input, PackedSequence) and input.dim() == 3:
            return self._layerwise(input, hx)
        # torch's forward reads the matrices from _flat_weights: hand it the dropped ones for this call.
        kept = self._flat_weights
        self._flat_weights = self._dropped_weights()
        try:
            return super().forward(input, hx)
        finally:
            self._flat_weights = kept

    def _dropped_weights(self) -> List[Optional[Tensor]]:
        """The flat weight list with DropConnect applied to every weight_hh (training only)."""
        if not (self.training and self.weight_drop):
            return list(self._flat_weights)
        return [F.dropout(w, self.weight_drop, True) if name.startswith("weight_hh") else w
                for name, w in zip(self._flat_weights_names, self._flat_weights)]

    def _layerwise(self, x: Tensor, hx: Optional[State]):
        """Training with locked dropout between layers: each layer is one fused call, and the dropout
        mask between them is shared over time (torch's own inter-layer dropout is not)."""
        D = 2 if self.bidirectional else 1
        B = x.shape[0] if self.batch_first else x.shape[1]
        if hx is None:
            zeros = x.new_zeros(self.num_layers * D, B, self.hidden_size)
            hx = (zeros, zeros)
        weights = self._dropped_weights()
        n = len(weights) // self.num_layers
        hs, cs = [], []
        for k in range(self.num_layers):
            if k:
                x = locked_dropout(x, self.dropout, True, self.batch_first)
            state = (hx[0][k * D:(k + 1) * D].contiguous(), hx[1][k * D:(k + 1) * D].contiguous())
            x, h, c = _VF.lstm(x, state, weights[k * n:(k + 1) * n], self.bias, 1, 0.0, True, self.bidirectional,
                               self.batch_first)
            hs.append(h)
            cs.append(c)
        return x, (torch.cat(hs), torch.cat(cs))

    # -- packed sequences on CPU ---------------------------------------------------------------------
    def _packed_by_segments(self, packed: PackedSequence, hx: Optional[State]):
        """A packed batch on CPU, with torch's results, through the fused kernel.

        torch runs a PackedSequence on CPU with its generic per-step implementation, not oneDNN's fused
        kernel: measured here (256 -> 512, 32 x 300 tokens, one thread) forward + backward took 24 s packed
        against 1.2 s padded. Rows sorted by length make the still-running rows a prefix of the batch, so
        the time axis splits at each distinct length into segments that are each one fused call over that
        prefix, the state carried from one to the next: outputs past a row's end stay zero and its final
        (h, c) is the state at its own last token, exactly as torch computes them for packed input.
        """
        x, lengths = pad_packed_sequence(packed, batch_first=True)  # the caller's batch order, as hx is
        order = lengths.argsort(descending=True, stable=True)
        x, lengths = x[order], lengths[order]
        D, B = 2 if self.bidirectional else 1, x.shape[0]
        if hx is None:
            zeros = x.new_zeros(self.num_layers * D, B, self.hidden_size)
            h0 = c0 = zeros
        else:
            h0, c0 = hx[0][:, order], hx[1][:, order]
        weights = self._dropped_weights()
        n = len(weights) // (self.num_layers * D)  # tensors per layer and direction
        ends = sorted(set(lengths.tolist()))
        keep = [int((lengths >= e).sum()) for e in ends]  # rows still running in the segment that ends at e
        hs, cs = [], []
        for layer in range(self.num_layers):
            if layer and self.training and self.dropout:
                x = locked_dropout(x, self.dropout, True, True) if self.locked_dropout \
                    else F.dropout(x, self.dropout, True)
            outs = []
            for d in range(D):
                k = layer * D + d
                inp = _reverse_within_lengths(x.transpose(0, 1), lengths).transpose(0, 1) if d else x
                y, h, c = self._segments(inp, h0[k], c0[k], weights[k * n:(k + 1) * n], ends, keep)
                outs.append(_reverse_within_lengths(y.transpose(0, 1), lengths).transpose(0, 1) if d else y)
                hs.append(h)
                cs.append(c)
            x = torch.cat(outs, -1) if D == 2 else outs[0]
        undo = order.argsort()
        out = pack_padded_sequence(x[undo], lengths[undo], batch_first=True, enforce_sorted=False)
        return out, (torch.stack(hs)[:, undo], torch.stack(cs)[:, undo])

    def _segments(self, x: Tensor, h: Tensor, c: Tensor, weights: List[Tensor], ends: List[int],
                  keep: List[int]) -> Tuple[Tensor, Tensor, Tensor]:
        """One layer and direction over rows sorted by length (B, T, F): the outputs (zero past each row's
        end) and every row's (h, c) after its last token."""
        B, start, outs = x.shape[0], 0, []
        for end, rows in zip(ends, keep):
            state = (h[None, :rows].contiguous(), c[None, :rows].contiguous())
            y, h_n, c_n = _VF.lstm(x[:rows, start:end], state, weights, self.bias, 1, 0.0, self.training, False,
                                   True)
            outs.append(F.pad(y, (0, 0, 0, 0, 0, B - rows)))
            h, c = torch.cat([h_n[0], h[rows:]]), torch.cat([c_n[0], c[rows:]])  # finished rows keep theirs
            start = end
        return torch.cat(outs, 1), h, c

    def _mogrify(self, layer: int, x: Tensor, h: Tensor) -> Tuple[Tensor, Tensor]:
        """Melis et al. 2019, eq. 1-2: alternate x = 2 sigmoid(Q^i h) * x (odd i), h = 2 sigmoid(R^i x) * h."""
        for i, lin in enumerate(self.mogrifier[layer]):
            if i % 2 == 0:
                x = 2 * torch.sigmoid(lin(h)) * x
            else:
                h = 2 * torch.sigmoid(lin(x)) * h
        return x, h

    def step(self, x: Tensor, state: State, out: Optional[State] = None) -> Tuple[Tensor, State]:
        """One time step through every layer, for decoding: x (B, input_size) -> h of the top layer (B, H).

        `out`: (h, c) tensors to write the new state into (a CUDA graph's buffers) instead of new ones.

        torch.nn.LSTM's sequence kernel pays a fixed set-up cost per call that dominates a one-step call
        on CPU (a per-token nn.LSTM loop reached 0.13 of the weight-streaming bound here); the LSTMCell
        kernel used here does the same arithmetic without it (0.86), and a single row on CPU goes faster
        still as one matrix-vector product per layer (_row_step). The reference backend runs the
        equations. Unidirectional only; no dropout (decoding runs in eval mode).
        """
        if self.bidirectional:
            raise ValueError("step() decodes left to right; a bidirectional LSTM has no next step")
        h, c = state
        hs, cs = [], []
        # One float32 row on CPU: the matrix-vector path. In bf16 torch's matrix-vector kernel is slower than
        # float32's (one thread here: 17 against 82 GB/s), while lstm_cell's bf16 path runs a 3 x 512 step
        # about 1.8x as fast as float32 (1,423 against ~780 tokens/s).
        row = x.shape[0] == 1 and x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()
        for layer in range(self.num_layers):
            sfx = f"_l{layer}"
            w_ih, w_hh = getattr(self, "weight_ih" + sfx), getattr(self, "weight_hh" + sfx)
            b_ih = getattr(self, "bias_ih" + sfx) if self.bias else None
            b_hh = getattr(self, "bias_hh" + sfx) if self.bias else None
            if self.backend == "reference":
                h_prev = h[layer]
                if self.mogrifier_rounds:
                    x, h_prev = self._mogrify(layer, x, h_prev)
                x_proj = x @ w_ih.t() + (b_ih if b_ih is not None else 0)
                h_l, c_l = lstm_cell(x_proj, h_prev, c[layer], w_hh, b_hh)
            elif row:
                h_l, c_l = self._row_step(layer, x, h[layer], c[layer])
            else:
                h_l, c_l = torch.lstm_cell(x, (h[layer], c[layer]), w_ih, w_hh, b_ih, b_hh)
            hs.append(h_l)
            cs.append(c_l)
            x = h_l
        if out is not None:
            return x, (torch.stack(hs, out=out[0]), torch.stack(cs, out=out[1]))
        return x, (torch.stack(hs), torch.stack(cs))

    def _row_step(self, layer: int, x: Tensor, h: Tensor, c: Tensor) -> State:
        """One step of one layer for a single row on CPU: one matrix-vector product over [W_ih | W_hh].

        At batch 1 a step costs the time to stream the weights once. torch.lstm_cell does two one-row
        matrix multiplies; one matrix-vector product over the two matrices side by side streams them
        faster (interleaved in one process on this project's CPU: 794 against 657 tokens/s for 3 x 512).
        The side-by-side copy is made at the first such step and again whenever a weight changes
        (training, load_state_dict): it costs one more copy of the LSTM's weights in memory."""
        W, b = self._row_weights()[layer]
        gates = torch.addmv(b, W, torch.cat([x[0], h[0]])) if b is not None else torch.mv(W, torch.cat([x[0], h[0]]))
        i, f, g, o = gates.view(4, -1)
        c = torch.sigmoid(f).mul_(c[0]).addcmul_(torch.sigmoid(i), torch.tanh(g))
        return torch.sigmoid(o).mul_(torch.tanh(c)).unsqueeze(0), c.unsqueeze(0)

    def _row_weights(self) -> List[Tuple[Tensor, Optional[Tensor]]]:
        """([W_ih | W_hh], b_ih + b_hh) per layer, rebuilt when any weight's storage or version changed."""
        weights = self._flat_weights
        key = tuple((w.data_ptr(), w._version) for w in weights)
        cached = self.__dict__.get("_row_cache")
        if cached is None or cached[0] != key:
            n = len(weights) // self.num_layers
            layers = []
            for k in range(self.num_layers):
                w_ih, w_hh, *biases = weights[k * n:(k + 1) * n]
                layers.append((torch.cat([w_ih, w_hh], 1).contiguous(), biases[0] + biases[1] if biases else None))
            self.__dict__["_row_cache"] = cached = (key, layers)
        return cached[1]

    # -- the equations -----------------------------------------------------------------------------
    def _reference_forward(self, input, hx: Optional[State]):
        packed = isinstance(input, PackedSequence)
        lengths = None
        if packed:
            # pad_packed_sequence restores the caller's batch order, the order hx is given in.
            x, lengths = pad_packed_sequence(input, batch_first=False)  # (T, B, F)
        else:
            x = input
            unbatched = x.dim() == 2
            if unbatched:
                x = x.unsqueeze(1)
                hx = None if hx is None else (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
            elif self.batch_first:
                x = x.transpose(0, 1)
        y, (h_n, c_n) = self._run_layers(x, hx, lengths)
        if packed:
            return pack_padded_sequence(y, lengths, enforce_sorted=False), (h_n, c_n)
        if unbatched:
            return y.squeeze(1), (h_n.squeeze(1), c_n.squeeze(1))
        if self.batch_first:
            y = y.transpose(0, 1)
        return y, (h_n, c_n)

    def _run_layers(self, x: Tensor, hx: Optional[State], lengths: Optional[Tensor]):
        T, B, _ = x.shape
        D = 2 if self.bidirectional else 1
        if hx is None:
            zeros = x.new_zeros(self.num_layers * D, B, self.hidden_size)
            hx = (zeros, zeros)
        mask = None
        if lengths is not None:  # (T, B, 1): 1 where step t is inside sequence b
            mask = (torch.arange(T).unsqueeze(1) < lengths.unsqueeze(0)).to(x).unsqueeze(-1)
        h_out, c_out = [], []
        layer_input = x
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(D):
                k = layer * D + direction
                sfx = f"_l{layer}" + ("_reverse" if direction else "")
                inp = _reverse_within_lengths(layer_input, lengths) if direction else layer_input
                m = None if mask is None else mask  # the mask is the same after reversal within lengths
                y, (h, c) = self._run_direction(inp, hx[0][k], hx[1][k], sfx, m, layer)
                outputs.append(_reverse_within_lengths(y, lengths) if direction else y)
                h_out.append(h)
                c_out.append(c)
            layer_input = torch.cat(outputs, dim=-1) if D == 2 else outputs[0]
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_input = locked_dropout(layer_input, self.dropout, True, batch_first=False) \
                    if self.locked_dropout else F.dropout(layer_input, self.dropout, True)
        return layer_input, (torch.stack(h_out), torch.stack(c_out))

    def _run_direction(self, x: Tensor, h: Tensor, c: Tensor, sfx: str, mask: Optional[Tensor], layer: int):
        w_ih, w_hh = getattr(self, "weight_ih" + sfx), getattr(self, "weight_hh" + sfx)
        b_ih = getattr(self, "bias_ih" + sfx) if self.bias else None
        b_hh = getattr(self, "bias_hh" + sfx) if self.bias else None
        if self.training and self.weight_drop:  # one DropConnect mask for the whole sequence
            w_hh = F.dropout(w_hh, self.weight_drop, True)
        if self.mogrifier_rounds:  # x is gated by h at every step, so its projection is per step too
            x_proj = None
        else:  # the input half of every gate does not depend on h, so one matmul covers all steps
            x_proj = x @ w_ih.t()
            if b_ih is not None:
                x_proj = x_proj + b_ih
        ys = []
        for t in range(x.shape[0]):
            if x_proj is None:
                x_t, h_in = self._mogrify(layer, x[t], h)
                xp = x_t @ w_ih.t() + (b_ih if b_ih is not None else 0)
                h_new, c_new = lstm_cell(xp, h_in, c, w_hh, b_hh)
            else:
                h_new, c_new = lstm_cell(x_proj[t], h, c, w_hh, b_hh)
            if mask is not None:  # past a sequence's end the state is frozen and the output is zero
                m = mask[t]
                h_new, c_new = m * h_new + (1 - m) * h, m * c_new + (1 - m) * c
                ys.append(m * h_new)
            else:
                ys.append(h_new)
            h, c = h_new, c_new
        return torch.stack(ys), (h, c)
