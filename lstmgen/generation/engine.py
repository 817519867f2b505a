"""The decoding engine: batched sampling/greedy decoding and beam search over token ids.

Every prompt goes through the LSTM once (prefill); after that each new token costs one LSTM step with
(h, c) carried, and a chosen token is fed to the LSTM only when the next one is asked for, so the last
token of a sequence is never run. Text, stop strings and streaming live one layer up (pipelines), which
calls `SamplingDecoder.step()` and tells it when a row is done.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..models import LanguageModel
from .config import GenerationConfig
from .processors import History, Processor, needs_counts, warp

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


@torch.inference_mode()
def prefill(model: LanguageModel, prompts: Sequence[Sequence[int]],
            states: Optional[Sequence[Optional[DecoderState]]] = None) -> Tuple[Tensor, LSTMState]:
    """Run every prompt (after its state's pending tokens) through the LSTM: one packed call for all
    prompts that start from zero, each distinct prompt once however many rows share it.

    Returns the next-token logits (B, V) and the batched state (L, B, H) x 2.
    """
    device = next(model.parameters()).device
    B = len(prompts)
    logits: List[Optional[Tensor]] = [None] * B
    hs: List[Optional[Tensor]] = [None] * B
    cs: List[Optional[Tensor]] = [None] * B
    fresh: dict = {}  # prompt ids -> rows that start from a zero state
    for b, ids in enumerate(prompts):
        st = states[b] if states else None
        ids = list(st.pending if st else []) + list(ids)
        if not ids:
            raise ValueError("a prompt must have at least one token (or a state with a pending token)")
        if st is None:
            fresh.setdefault(tuple(ids), []).append(b)
            continue
        out, (h, c) = model(torch.tensor([ids], device=device), (st.h.to(device), st.c.to(device)))
        logits[b], hs[b], cs[b] = out[0, -1].float(), h[:, 0], c[:, 0]
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
        for i, u in enumerate(uniq):
            for b in fresh[u]:
                logits[b], hs[b], cs[b] = last[i], h[:, i], c[:, i]
    return torch.stack(logits), (torch.stack(hs, 1), torch.stack(cs, 1))


class SamplingDecoder:
    """Sampling or greedy decoding of several rows at once.

    Args:
        model: the language model.
        prompts: prompt ids per row (rows may repeat a prompt for num_return_sequences).
        cfg: decoding options (temperature 0 = greedy).
        processors: penalties and bans (processors.build_processors).
        eos_id: the end-of-sequence token (None: none).
        states: per-row DecoderState to continue from.
    """

    def __init__(self, model: LanguageModel, prompts: Sequence[Sequence[int]], cfg: GenerationConfig,
                 processors: Sequence[Processor], eos_id: Optional[int] = None,
                 states: Optional[Sequence[Optional[DecoderState]]] = None) -> None:
        model.eval()
        self.model, self.cfg, self.processors, self.eos_id = model, cfg, list(processors), eos_id
        self.device = next(model.parameters()).device
        self.gen = torch.Generator(device=self.device)
        if cfg.seed is not None:
            self.gen.manual_seed(cfg.seed)
        else:
            self.gen.seed()  # fresh entropy for this generator only; the global RNG is left alone
        self.logits, self.state = prefill(model, prompts, states)
        B = len(prompts)
        self.history = History(prompts, self.logits.shape[-1], cfg.no_repeat_ngram_size, self.device,
                               counts=needs_counts(cfg))
        self.outputs = [SequenceOutput([], "length", [] if cfg.logprobs else None) for _ in range(B)]
        self.active = [True] * B
        self.pending: Optional[Tensor] = None
        self.deadline = time.monotonic() + cfg.max_time if cfg.max_time else None

    @torch.inference_mode()
    def step(self) -> List[Optional[int]]:
        """Choose one token for every row; None for rows already finished."""
        if self.pending is not None:  # feed the previous tokens now that a next one is wanted
            out, self.state = self.model.step(self.pending, self.state)
            self.logits = out.float()
        logits = self.logits.clone() if self.processors else self.logits  # processors may write in place
        for proc in self.processors:
            logits = proc(logits, self.history)
        blocked: List[bool] = []
        if self.processors:  # bans can leave a row no token at all: that row ends here
            dead = torch.isneginf(logits).all(-1)
            if bool(dead.any()):
                blocked = dead.tolist()
                logits = logits.masked_fill(dead[:, None], 0.0)
        if self.cfg.greedy:
            new = logits.argmax(-1)
        else:
            probs = warp(logits, self.cfg).softmax(-1)
            new = torch.multinomial(probs, 1, generator=self.gen).squeeze(-1)
        self.history.append(new)
        self.pending = new
        logp = self.logits.log_softmax(-1).gather(-1, new[:, None]).squeeze(-1) if self.cfg.logprobs else None
        chosen: List[Optional[int]] = []
        for b, tok in enumerate(new.tolist()):
            if blocked and blocked[b] and self.active[b]:
                self.finish(b, "length", fed=True)
            if not self.active[b]:
                chosen.append(None)
                continue
            o = self.outputs[b]
            o.token_ids.append(tok)
            if o.logprobs is not None:
                o.logprobs.append(float(logp[b]))
            chosen.append(tok)
            if tok == self.eos_id and len(o.token_ids) > self.cfg.min_new_tokens:
                self.finish(b, "eos")
            elif len(o.token_ids) >= self.cfg.max_new_tokens:
                self.finish(b, "length")
        if self.deadline is not None and time.monotonic() > self.deadline:
            for b in range(len(self.active)):
                if self.active[b]:
                    self.finish(b, "length")
        return chosen

    def finish(self, b: int, reason: str, fed: bool = False) -> None:
        """Mark row b done and keep its state for continuing: the LSTM state and, unless it was already
        `fed` to the LSTM, the last token (chosen after that state)."""
        if not self.active[b]:
            return
        self.active[b] = False
        o = self.outputs[b]
        o.finish_reason = reason
        h, c = self.state
        o.state = DecoderState(h[:, b:b + 1].clone(), c[:, b:b + 1].clone(), [] if fed else o.token_ids[-1:])

    @property
    def done(self) -> bool:
        return not any(self.active)


@torch.inference_mode()
def beam_search(model: LanguageModel, prompt: Sequence[int], cfg: GenerationConfig,
                processors: Sequence[Processor], eos_id: Optional[int] = None,
                state: Optional[DecoderState] = None) -> List[SequenceOutput]:
    """Beam search for one prompt; the best `num_return_sequences` hypotheses, best first.

    A hypothesis scores sum(logprob) / length ** length_penalty. With early_stopping, search ends once
    num_beams hypotheses have ended with eos; otherwise (and without eos) beams run to max_new_tokens.
    """
    model.eval()
    K = cfg.num_beams
    logits, (h, c) = prefill(model, [prompt], [state] if state else None)
    state_k = (h.repeat(1, K, 1), c.repeat(1, K, 1))
    logits = logits.repeat(K, 1)
    history = History([prompt] * K, logits.shape[-1], cfg.no_repeat_ngram_size, logits.device,
                      counts=needs_counts(cfg))
    beam_scores = torch.full((K,), float("-inf"), device=logits.device)
    beam_scores[0] = 0.0  # all beams start identical: expand only the first
    logps: List[List[float]] = [[] for _ in range(K)]
    finished: List[SequenceOutput] = []
    deadline = time.monotonic() + cfg.max_time if cfg.max_time else None

    def score(total: float, length: int) -> float:
        return total / max(length, 1) ** cfg.length_penalty

    tokens = torch.empty(0, dtype=torch.long)  # the beams' last tokens, fed at the next step
    for t in range(cfg.max_new_tokens):
        if t:
            out, state_k = model.step(tokens, state_k)
            logits = out.float()
        scores = logits.log_softmax(-1)
        for proc in processors:
            scores = proc(scores, history)
        V = scores.shape[-1]
        cand = (beam_scores[:, None] + scores).view(-1)
        top_scores, top_idx = cand.topk(min(2 * K, cand.numel()))
        keep_beam, keep_tok, keep_score = [], [], []
        for s, i in zip(top_scores.tolist(), top_idx.tolist()):
            if s == float("-inf"):
                break
            beam, tok = divmod(i, V)
            step_lp = float(scores[beam, tok])
            if tok == eos_id and t + 1 > cfg.min_new_tokens:
                ids = history.tokens[beam][history.prompt_lens[beam]:] + [tok]
                finished.append(SequenceOutput(ids, "eos", logps[beam] + [step_lp], score=score(s, len(ids))))
                continue
            keep_beam.append(beam)
            keep_tok.append(tok)
            keep_score.append(s)
            if len(keep_beam) == K:
                break
        if not keep_beam or (cfg.early_stopping and len(finished) >= K) or \
                (deadline is not None and time.monotonic() > deadline):
            break
        while len(keep_beam) < K:  # fewer live candidates than beams: pad with dead copies
            keep_beam.append(keep_beam[0])
            keep_tok.append(keep_tok[0])
            keep_score.append(float("-inf"))
        idx = torch.tensor(keep_beam, device=logits.device)
        tokens = torch.tensor(keep_tok, device=logits.device)
        logps = [logps[b] + [float(scores[b, tk])] for b, tk in zip(keep_beam, keep_tok)]
        history.reorder(idx)
        history.append(tokens)
        state_k = (state_k[0][:, idx], state_k[1][:, idx])
        beam_scores = torch.tensor(keep_score, device=logits.device)
    for b in range(K):
        if beam_scores[b] > float("-inf"):
            ids = history.tokens[b][history.prompt_lens[b]:]
            if ids:
                finished.append(SequenceOutput(ids, "length", logps[b], score=score(float(beam_scores[b]), len(ids))))
    finished.sort(key=lambda o: o.score, reverse=True)
    best = finished[: cfg.num_return_sequences]
    for o in best:
        o.logprobs = o.logprobs if cfg.logprobs else None
    return best
