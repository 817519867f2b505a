"""Beam search for one prompt of the language model, with the engine's logits processors."""
from __future__ import annotations

import time
from typing import List, Optional, Sequence

import torch

from ..models import LanguageModel
from .config import GenerationConfig
from .prefill import DecoderState, SequenceOutput, prefill
from .processors import History, TokenRules, apply_processors


@torch.inference_mode()
def beam_search(model: LanguageModel, prompt: Sequence[int], cfg: GenerationConfig,
                rules: TokenRules = TokenRules(), state: Optional[DecoderState] = None) -> List[SequenceOutput]:
    """Beam search for one prompt; the best `num_return_sequences` hypotheses, best first.

    A hypothesis scores sum(logprob) / length ** length_penalty. With early_stopping, search ends once
    num_beams hypotheses have ended with eos; otherwise (and without eos) beams run to max_new_tokens.
    """
    model.eval()
    K = cfg.num_beams
    logits, (h, c) = prefill(model, [prompt], [state] if state else None)
    state_k = (h.repeat(1, K, 1), c.repeat(1, K, 1))
    logits = logits.repeat(K, 1)
    eos_id = cfg.eos_token_id
    history = History(logits.shape[-1], logits.device)
    history.add([prompt] * K, cfg, rules, eos_id)
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
        scores = apply_processors(scores, history)
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
        history.keep(keep_beam)
        history.append(tokens)
        state_k = (state_k[0][:, idx], state_k[1][:, idx])
        beam_scores = torch.tensor(keep_score, device=logits.device)
    for b in range(K):
        if beam_scores[b] > float("-inf"):
            ids = history.tokens[b][history.prompt_lens[b]:]
            if ids:
                finished.append(SequenceOutput(ids, "length", logps[b], score=score(float(beam_scores[b]), len(ids))))
    if not finished:  # no step ran (max_new_tokens 0, or max_time spent first): the empty continuation
        finished = [SequenceOutput([], "length", [], score=0.0) for _ in range(cfg.num_return_sequences)]
    finished.sort(key=lambda o: o.score, reverse=True)
    best = finished[: cfg.num_return_sequences]
    for o in best:
        o.logprobs = o.logprobs if cfg.logprobs else None
    return best
