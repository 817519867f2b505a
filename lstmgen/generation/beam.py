"""Beam search: one implementation, with Hugging Face transformers' semantics, for every model.

The language model and the encoder-decoder reach it through two functions, as in search.py:
`step(tokens, state) -> (log_probs (N, V), state)` (tokens is None at the first step, whose log-probs the
model already has: the LM's prefill, or the decoder fed <s>) and `reorder(state, index) -> state`.

Each source has K = num_beams running beams; rows s*K .. s*K+K-1 are source s's. At every step
(transformers' `_beam_search`, v4.50 and later):

    acc[k, v]   = running[k] + processed log p(v | beam k)          (processors: Hugging Face's order)
    candidates  = the 2K best (k, v) by acc                          (sorted, best first)
    finished    = candidates ending with eos, among the first K only; at the last step (max_new_tokens
                  or max_time reached) every one of the first K
    score       = acc / n ** length_penalty, n = tokens generated, eos included
    hypotheses  = the K best of (hypotheses so far, finished)
    running     = the K best candidates that did not finish

A source is done when no step can change its hypotheses (transformers' early_stopping):
- True: K hypotheses have finished;
- False: K have finished and the best running beam, scored at its present length, is not better than the
  worst of them (a heuristic: a longer beam may still score better when length_penalty > 0);
- "never": the same, but a running beam is scored at max_new_tokens when length_penalty > 0 (the
  canonical search: nothing better is missed).
Done sources leave the batch. The returned hypotheses are the best num_return_sequences, best first.

Deliberate differences from transformers: a candidate whose score is -inf (every token banned), or that
continues one of the masked copies the search starts with, never finishes: where fewer hypotheses than
num_return_sequences finish, the rest come back empty with score -inf (transformers returns filler);
per-token `logprobs` are the model's (before processors), while `score` sums the processed ones, as
transformers' `sequences_scores` does.
"""
from __future__ import annotations

import time
from typing import Callable, List, Optional, Sequence, Tuple, TypeVar

import torch
from torch import Tensor

from ..models import LanguageModel
from .config import GenerationConfig
from .prefill import DecoderState, LSTMState, SequenceOutput, prefill
from .processors import History, TokenRules, apply_processors

S = TypeVar("S")
StepFn = Callable[[Optional[Tensor], S], Tuple[Tensor, S]]
ReorderFn = Callable[[S, Tensor], S]

MASK = -1.0e9  # what transformers adds to a candidate's score to rule it out (the same float arithmetic)


def beam_search(step: StepFn, reorder: ReorderFn, state: S, prefixes: Sequence[Sequence[int]],
                cfg: GenerationConfig, rules: TokenRules = TokenRules()) -> List[List[SequenceOutput]]:
    """Beam search for len(prefixes) sources at once, run to the end (BeamSearch step by step).

    Args:
        step: the model's step; called with tokens None first (the log-probs after each prefix).
        reorder: selects rows of a state (keeps, repeats or drops them).
        state: one row per source.
        prefixes: what the processors see before the first new token of each source (the LM's prompt;
            <s> for the encoder-decoder).
        cfg: the options (num_beams, length_penalty, early_stopping, eos_token_id, max_new_tokens, max_time,
            num_return_sequences, and the processors'; the warpers do not apply).
        rules: token sequences never to produce, DRY's breakers.

    Returns, per source, num_return_sequences outputs, best first; each holds the generated ids (eos
    included), finish_reason "eos" or "length", score, and per-token logprobs when cfg.logprobs.
    """
    search = BeamSearch(step, reorder, state, prefixes, cfg, rules)
    while search.step():
        pass
    return search.results()


class BeamSearch:
    """Beam search one step at a time (the arguments are beam_search's): `step()` runs one model step for
    every live source, so that a caller (the server's engine) can interleave it with other work, and
    `finish()` makes the next step the last, as max_time does (its candidates become hypotheses)."""

    def __init__(self, step: StepFn, reorder: ReorderFn, state: S, prefixes: Sequence[Sequence[int]],
                 cfg: GenerationConfig, rules: TokenRules = TokenRules()) -> None:
        B = len(prefixes)
        self.model_step, self.reorder, self.prefixes, self.cfg, self.rules = step, reorder, prefixes, cfg, rules
        self.beams = _Beams(B, cfg.num_beams, cfg)
        self.state = reorder(state, torch.arange(B).repeat_interleave(cfg.num_beams)) if B else state
        self.history: Optional[History] = None
        self.deadline = time.monotonic() + cfg.max_time if cfg.max_time else None
        self.tokens: Optional[Tensor] = None
        self.t = 0
        self.done = cfg.max_new_tokens == 0 or B == 0
        self.last = False

    @property
    def rows(self) -> int:
        """Rows the next step runs (live sources x num_beams)."""
        return 0 if self.done else len(self.beams.live) * self.cfg.num_beams

    def finish(self) -> None:
        """End at the next step: its candidates are hypotheses, as at max_new_tokens."""
        self.last = True

    @torch.inference_mode()
    def step(self) -> bool:
        """One step of every live source; False once the search is over."""
        if self.done:
            return False
        cfg = self.cfg
        logp, self.state = self.model_step(self.tokens, self.state)
        logp = logp.float()
        if self.history is None:
            self.history = History(logp.shape[-1], logp.device)
            self.history.add([list(p) for p in self.prefixes for _ in range(cfg.num_beams)], cfg, self.rules,
                             cfg.eos_token_id)
        h = self.history
        scores = apply_processors(logp.clone(), h) if h.has_processors else logp
        last = self.last or self.t + 1 == cfg.max_new_tokens or \
            (self.deadline is not None and time.monotonic() > self.deadline)
        rows = self.beams.advance(logp, scores, self.t, last)
        self.t += 1
        if rows is None:
            self.done = True
            return False
        self.state = self.reorder(self.state, torch.tensor(rows, device=logp.device))
        h.keep(rows)
        self.tokens = torch.tensor(self.beams.tokens, device=logp.device)
        h.append(self.tokens)
        return True

    def results(self) -> List[List[SequenceOutput]]:
        """Per source, num_return_sequences outputs, best first (empty ones when max_new_tokens is 0)."""
        if self.t == 0:
            cfg = self.cfg
            return [[SequenceOutput([], "length", [] if cfg.logprobs else None, score=0.0)
                     for _ in range(cfg.num_return_sequences)] for _ in self.prefixes]
        return self.beams.results()


def lm_beam_search(model: LanguageModel, prompts: Sequence[Sequence[int]], cfg: GenerationConfig,
                   rules: TokenRules = TokenRules(),
                   states: Optional[Sequence[Optional[DecoderState]]] = None) -> List[List[SequenceOutput]]:
    """Beam search for the language model: every prompt (each continuing its state, if any) prefilled
    once, then all prompts' beams stepped as one batch. Returns per prompt what beam_search returns."""
    search = lm_beams(model, prompts, cfg, rules, states)
    while search.step():
        pass
    return search.results()


@torch.inference_mode()
def lm_beams(model: LanguageModel, prompts: Sequence[Sequence[int]], cfg: GenerationConfig,
             rules: TokenRules = TokenRules(),
             states: Optional[Sequence[Optional[DecoderState]]] = None) -> "BeamSearch":
    """lm_beam_search's BeamSearch, not yet stepped (the prompts are prefilled here)."""
    model.eval()
    logits, state = prefill(model, prompts, states)

    def step(tokens: Optional[Tensor], st: LSTMState) -> Tuple[Tensor, LSTMState]:
        if tokens is None:  # the prompts' own next-token log-probs, repeated for each source's beams
            return logits.float().log_softmax(-1).repeat_interleave(cfg.num_beams, 0), st
        out, st = model.step(tokens, st)
        return out.float().log_softmax(-1), st

    def reorder(st: LSTMState, index: Tensor) -> LSTMState:
        index = index.to(st[0].device)
        return st[0][:, index], st[1][:, index]

    return BeamSearch(step, reorder, state, prompts, cfg, rules)


class _Beams:
    """The bookkeeping of beam search for B sources (see the module docstring): running beams, finished
    hypotheses, which sources are done. Scores are computed with the same tensor operations as
    transformers', so that equal inputs give equal choices, ties included."""

    def __init__(self, B: int, K: int, cfg: GenerationConfig) -> None:
        self.K, self.cfg = K, cfg
        self.live = torch.arange(B)  # the source of each block of K running rows
        self.running = torch.zeros(B, K)  # (live, K) the running beams' scores
        self.running[:, 1:] = MASK  # all beams start identical: expand only the first
        self.seqs: List[List[int]] = [[] for _ in range(B * K)]  # per running row: generated ids, logprobs
        self.lps: List[List[float]] = [[] for _ in range(B * K)]
        self.tokens: List[int] = []  # the running rows' last tokens, fed at the next step
        self.hyp_scores = torch.full((B, K), MASK)  # per source, K slots of finished hypotheses, best first
        self.hyp_real = torch.zeros(B, K, dtype=torch.bool)  # which slots hold one
        self.hyps: List[List[Optional[SequenceOutput]]] = [[None] * K for _ in range(B)]

    def advance(self, logp: Tensor, scores: Tensor, t: int, last: bool) -> Optional[List[int]]:
        """Take step t's log-probs (raw and processed, one row per running beam): update the hypotheses
        and return the rows the next step continues (None: every source is done)."""
        K, cfg, n, V = self.K, self.cfg, len(self.live), scores.shape[-1]
        acc = (scores.view(n, K, V) + self.running.to(scores.device)[:, :, None]).reshape(n, K * V)
        top_s, top_i = acc.topk(min(2 * K, K * V), dim=-1)
        top_lp = logp.reshape(n, K * V).gather(-1, top_i).cpu()
        top_s, top_i = top_s.cpu(), top_i.cpu()
        parent, tok = top_i // V, top_i % V
        if last:  # transformers' MaxLength / MaxTime criteria: every candidate ends here
            hits = torch.ones_like(tok, dtype=torch.bool)
        else:
            hits = tok == (cfg.eos_token_id if cfg.eos_token_id is not None else -1)
        just = hits.clone()
        just[:, K:] = False  # only the first K candidates may finish
        normed = top_s / ((t + 1) ** cfg.length_penalty) + (~just).to(torch.float32) * MASK
        merged_scores = torch.cat([self.hyp_scores[self.live], normed], dim=1)
        slots = merged_scores.topk(K, dim=-1).indices
        self.hyp_scores[self.live] = merged_scores.gather(-1, slots)
        self.hyp_real[self.live] = torch.cat([self.hyp_real[self.live], just], dim=1).gather(-1, slots)
        for j, s in enumerate(self.live.tolist()):
            old = self.hyps[s]
            # a candidate of a masked beam (every token banned, or a start copy) is filler, not a hypothesis
            self.hyps[s] = [old[m] if m < K else self._finished(j, m - K, parent, tok, top_lp, normed)
                            if just[j, m - K] and top_s[j, m - K] > MASK / 2 else None for m in slots[j].tolist()]
        if last:
            return None
        # the next step's running beams: the K best candidates that did not finish
        run_s = top_s + hits.to(torch.float32) * MASK
        pick = run_s.topk(K, dim=-1).indices
        running = run_s.gather(-1, pick)
        keep = (~self._done(running, t + 1)).nonzero().view(-1)
        if not len(keep):
            return None
        rows, seqs, lps, self.tokens = [], [], [], []
        for j in keep.tolist():
            for c in pick[j].tolist():
                r = j * K + int(parent[j, c])
                rows.append(r)
                self.tokens.append(int(tok[j, c]))
                seqs.append(self.seqs[r] + [self.tokens[-1]])
                lps.append(self.lps[r] + [float(top_lp[j, c])])
        self.seqs, self.lps = seqs, lps
        self.running, self.live = running[keep], self.live[keep]
        return rows

    def _finished(self, j: int, c: int, parent: Tensor, tok: Tensor, top_lp: Tensor,
                  normed: Tensor) -> SequenceOutput:
        """The hypothesis that candidate c of live source j ends."""
        r = j * self.K + int(parent[j, c])
        ids = self.seqs[r] + [int(tok[j, c])]
        reason = "eos" if ids[-1] == self.cfg.eos_token_id else "length"
        return SequenceOutput(ids, reason, self.lps[r] + [float(top_lp[j, c])], score=float(normed[j, c]))

    def _done(self, running: Tensor, generated: int) -> Tensor:
        """Per live source, whether no later step can change its hypotheses (transformers'
        `_check_early_stop_heuristic` and `_beam_search_has_unfinished_sequences`); also where no running
        beam is left that may finish (every token banned)."""
        cfg = self.cfg
        real, scores = self.hyp_real[self.live], self.hyp_scores[self.live]
        stuck = running[:, 0] <= MASK / 2
        if cfg.early_stopping is True:
            return real.all(-1) | stuck
        length = cfg.max_new_tokens if cfg.early_stopping == "never" and cfg.length_penalty > 0 else generated
        best_possible = running[:, :1] / (length ** cfg.length_penalty)
        worst = torch.where(real, scores.min(-1, keepdim=True).values, torch.tensor(MASK))
        return ~(best_possible > worst).any(-1) | stuck

    def results(self) -> List[List[SequenceOutput]]:
        """Per source, the best num_return_sequences hypotheses, best first."""
        out = []
        for hyps in self.hyps:
            n = self.cfg.num_return_sequences
            best = [h for h in hyps if h is not None][:n]
            for h in best:
                h.logprobs = h.logprobs if self.cfg.logprobs else None
            # fewer hypotheses than asked for (every token banned): the rest are empty, scored -inf
            out.append(best + [SequenceOutput([], "length", [] if self.cfg.logprobs else None, score=float("-inf"))
                               for _ in range(n - len(best))])
        return out
