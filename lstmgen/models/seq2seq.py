"""The attention encoder-decoder: a bidirectional LSTM reads the source, an LSTM with attention writes the
target (Bahdanau et al. 2015; Luong et al. 2015), optionally copying source tokens and tracking coverage
(See et al. 2017, pointer-generator).

One decoder step, with input feeding (Luong et al. 2015, section 3.3) the previous attentional vector
h~_{t-1} joins the input, so the decoder knows what it attended to before:

    h_t       = LSTM([emb(y_{t-1}); h~_{t-1}], h_{t-1})
    a_t, c_t  = attention(h_t, memory [, coverage_t])              (nn.attention)
    h~_t      = tanh(W_c [c_t; h_t])                                (Luong eq. 5)
    P_vocab   = softmax(W_o h~_t)                                   (W_o tied to the target embedding)
    copy:  p_gen = sigmoid(w [c_t; h_t; x_t]),  P = p_gen P_vocab + (1 - p_gen) sum_{s: src_s = w} a_t,s
           (See et al. eq. 8-9). Copying needs one vocabulary for both sides; with byte-level BPE every
           source token is in it, so no extended vocabulary is needed.
    coverage_{t+1} = coverage_t + a_t; its loss sum_s min(a_t,s, coverage_t,s) (See et al. eq. 12)

The encoder's top layer's last states (both directions) go through a "bridge" (a linear layer and tanh)
to start every decoder layer, as OpenNMT's `bridge` option does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..errors import UserInputError, check_range
from ..nn import LSTM
from ..nn.attention import Attention
from ..serial import JSONConfig

DecoderStateDict = Dict[str, Optional[Tensor]]


@dataclass
class Seq2SeqConfig(JSONConfig):
    """Hyper-parameters of Seq2Seq.

    Args:
        src_vocab_size / tgt_vocab_size: token ids of each side.
        embed_size: embedding width.
        hidden_size: decoder width; a bidirectional encoder gives each direction half, so its memory has
            the decoder's width (dot attention needs that).
        encoder_layers / decoder_layers: stacked LSTM layers.
        bidirectional: the encoder reads the source both ways.
        attention: "dot", "general", "bahdanau" or "none".
        input_feed: feed the previous attentional vector into the next decoder step.
        dropout: on embeddings, between layers and before the output layer.
        share_embeddings: one vocabulary and one embedding for both sides.
        tie_output: the output layer uses the target embedding (the attentional vector is embed_size wide).
        copy: pointer-generator copying from the source (needs share_embeddings).
        coverage: coverage vector and loss (needs bahdanau attention).
        backend: the LSTM backend.
    """

    src_vocab_size: int
    tgt_vocab_size: int
    embed_size: int = 256
    hidden_size: int = 512
    encoder_layers: int = 2
    decoder_layers: int = 2
    bidirectional: bool = True
    attention: str = "general"
    input_feed: bool = True
    dropout: float = 0.3
    share_embeddings: bool = False
    tie_output: bool = True
    copy: bool = False
    coverage: bool = False
    backend: str = "auto"

    def __post_init__(self) -> None:
        for name in ("src_vocab_size", "tgt_vocab_size", "embed_size", "hidden_size", "encoder_layers",
                     "decoder_layers"):
            check_range(name, getattr(self, name), 1)
        check_range("dropout", self.dropout, 0.0, 1.0)
        if self.dropout >= 1.0:
            raise UserInputError("dropout must be < 1")
        if self.bidirectional and self.hidden_size % 2:
            raise UserInputError(f"hidden_size must be even with a bidirectional encoder, got {self.hidden_size}")
        if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            raise UserInputError("share_embeddings needs one vocabulary for both sides (a shared tokenizer)")
        if self.copy and (not self.share_embeddings or self.attention == "none"):
            raise UserInputError("copy needs a shared vocabulary (share_embeddings) and attention")
        if self.coverage and self.attention != "bahdanau":
            raise UserInputError("coverage works with bahdanau attention (See et al. 2017); set attention "
                                 "to bahdanau")

    @property
    def attn_size(self) -> int:
        """Width of the attentional vector h~ (what the output layer reads and input feeding feeds)."""
        return self.embed_size if self.tie_output else self.hidden_size


class Seq2Seq(nn.Module):
    """Encoder-decoder with attention; `forward` for teacher-forced training, `encode` + `decode_step` for
    search (generation.search).

    Args:
        config: the hyper-parameters.
    """

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.config = c = config
        E, H, A = c.embed_size, c.hidden_size, c.attn_size
        self.src_embedding = nn.Embedding(c.src_vocab_size, E)
        self.tgt_embedding = self.src_embedding if c.share_embeddings else nn.Embedding(c.tgt_vocab_size, E)
        self.encoder = LSTM(E, H // 2 if c.bidirectional else H, c.encoder_layers, batch_first=True,
                            dropout=c.dropout, bidirectional=c.bidirectional, backend=c.backend)
        self.bridge = nn.Linear(H, 2 * c.decoder_layers * H)
        self.attention = None if c.attention == "none" else Attention(c.attention, H, H, c.coverage)
        self.feeds = c.input_feed and self.attention is not None
        self.decoder = nn.ModuleList(
            LSTM((E + A if self.feeds else E) if k == 0 else H, H, 1, batch_first=True, backend=c.backend)
            for k in range(c.decoder_layers))
        self.combine = nn.Linear(2 * H if self.attention is not None else H, A, bias=False)
        self.out = nn.Linear(A, c.tgt_vocab_size)
        if c.tie_output:
            self.out.weight = self.tgt_embedding.weight
        self.p_gen = nn.Linear(2 * H + E, 1) if c.copy else None
        self.drop = nn.Dropout(c.dropout)
        # dict, not set: a set of modules is ordered by address, which made which embedding took the first
        # random draws (and so the trained model) change from process to process
        for emb in dict.fromkeys((self.src_embedding, self.tgt_embedding)):
            nn.init.uniform_(emb.weight, -0.1, 0.1)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- encoder -----------------------------------------------------------------------------------
    def encode(self, src: Tensor, src_lengths: Tensor) -> DecoderStateDict:
        """Read sources (B, S) of the given lengths; the decoder's starting state (see decode_step)."""
        c = self.config
        B, S = src.shape
        x = self.drop(self.src_embedding(src))
        packed = pack_padded_sequence(x, src_lengths.cpu(), batch_first=True, enforce_sorted=False)
        y, (h_n, _) = self.encoder(packed)
        memory, _ = pad_packed_sequence(y, batch_first=True, total_length=S)
        mask = torch.arange(S, device=src.device)[None, :] < src_lengths.to(src.device)[:, None]
        top = torch.cat([h_n[-2], h_n[-1]], -1) if c.bidirectional else h_n[-1]  # the top layer, both ways
        init = torch.tanh(self.bridge(top)).view(B, 2, c.decoder_layers, c.hidden_size).permute(1, 2, 0, 3)
        A = c.attn_size
        return {"h": init[0].contiguous(), "c": init[1].contiguous(), "memory": memory, "mask": mask,
                "keys": self.attention.keys(memory) if self.attention is not None else None,
                "feed": memory.new_zeros(B, A) if self.feeds else None,
                "coverage": memory.new_zeros(B, S) if c.coverage else None,
                "src": src if c.copy else None}

    # -- decoder -----------------------------------------------------------------------------------
    def _step(self, emb: Tensor, st: DecoderStateDict) -> Tuple[Tensor, Optional[Tensor], Tensor,
                                                                 Optional[Tensor], DecoderStateDict]:
        """One decoder step from the embedded previous token: (h~, attention, top h, context, new state)."""
        x = torch.cat([emb, st["feed"]], -1) if self.feeds else emb
        hs, cs = [], []
        for k, layer in enumerate(self.decoder):
            if k:
                x = self.drop(x)
            x, (h, c) = layer.step(x, (st["h"][k:k + 1], st["c"][k:k + 1]))
            hs.append(h[0])
            cs.append(c[0])
        new = dict(st, h=torch.stack(hs), c=torch.stack(cs))
        attn = context = None
        if self.attention is not None:
            context, attn = self.attention(x, st["memory"], st["mask"], st["keys"], st["coverage"])
            out = torch.tanh(self.combine(torch.cat([context, x], -1)))
            if st["coverage"] is not None:
                new["coverage"] = st["coverage"] + attn
        else:
            out = torch.tanh(self.combine(x))
        if self.feeds:
            new["feed"] = out
        return out, attn, x, context, new

    def _log_probs(self, out: Tensor, emb: Tensor, top: Tensor, context: Optional[Tensor],
                   attn: Optional[Tensor], src: Optional[Tensor]) -> Tensor:
        """Log-probabilities of the next token from attentional vectors (..., A): softmax, or the
        pointer-generator mixture (See et al. eq. 8-9). Leading dims of all inputs match."""
        logits = self.out(self.drop(out)).float()
        if self.p_gen is None:
            return logits.log_softmax(-1)
        p_gen = torch.sigmoid(self.p_gen(torch.cat([context, top, emb], -1))).float()
        p = p_gen * logits.softmax(-1)
        index = src.view(src.shape[0], *([1] * (attn.dim() - 2)), src.shape[1]).expand_as(attn)
        p = p.scatter_add(-1, index, (1 - p_gen) * attn.float())
        return p.clamp_min(1e-12).log()

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tuple[Tensor, Optional[Tensor],
                                                                                  Optional[Tensor]]:
        """Teacher forcing: log-probabilities (B, T, V) of each next target token given the previous ones
        (tgt_in starts with <s>), the attention (B, T, S) and the coverage loss per position (B, T)."""
        st = self.encode(src, src_lengths)
        emb = self.drop(self.tgt_embedding(tgt_in))
        outs, attns, tops, contexts, cov_losses = [], [], [], [], []
        for t in range(tgt_in.shape[1]):
            before = st["coverage"]
            out, attn, top, context, st = self._step(emb[:, t], st)
            outs.append(out)
            tops.append(top)
            if attn is not None:
                attns.append(attn)
                contexts.append(context)
            if before is not None:
                cov_losses.append(torch.minimum(attn, before).sum(-1))
        attn = torch.stack(attns, 1) if attns else None
        context = torch.stack(contexts, 1) if contexts else None
        logp = self._log_probs(torch.stack(outs, 1), emb, torch.stack(tops, 1), context, attn, st["src"])
        return logp, attn, (torch.stack(cov_losses, 1) if cov_losses else None)

    def decode_step(self, tokens: Tensor, st: DecoderStateDict) -> Tuple[Tensor, DecoderStateDict, Optional[Tensor]]:
        """Search step: the previous tokens (B,) -> next-token log-probabilities (B, V), the new state and
        the attention weights (B, S)."""
        emb = self.tgt_embedding(tokens)
        out, attn, top, context, st = self._step(emb, st)
        return self._log_probs(out, emb, top, context, attn, st["src"]), st, attn

    @staticmethod
    def reorder_state(st: DecoderStateDict, idx: Tensor) -> DecoderStateDict:
        """The state of rows `idx` (beam search keeps, repeats and drops rows)."""
        return {k: None if v is None else (v[:, idx] if k in ("h", "c") else v[idx]) for k, v in st.items()}
