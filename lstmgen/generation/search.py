"""Batched search over any step function: greedy, sampling and beam search for a batch of sources at once.

The sequence-to-sequence decoder has more state than (h, c) (the encoder's memory, input feeding,
coverage), so search here knows the model only through two functions, as fairseq's incremental decoding
does: `step(tokens, state) -> (log_probs (N, V), state)` and `reorder(state, index) -> state`, which keeps,
repeats or drops rows. The logits processors, warpers and sampler are the engine's own (processors.py),
so every decoding option means the same thing for the language model and the encoder-decoder.

Finished rows leave the batch (reorder), so a batch of short and long sentences does not keep paying for
the short ones.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple, TypeVar

import torch
from torch import Tensor

from .config import GenerationConfig
from .prefill import SequenceOutput
from .processors import History, TokenRules, apply_processors, sample, warp

S = TypeVar("S")
StepFn = Callable[[Tensor, S], Tuple[Tensor, S]]
ReorderFn = Callable[[S, Tensor], S]


@torch.inference_mode()
def search(step: StepFn, reorder: ReorderFn, state: S, batch_size: int, cfg: GenerationConfig, bos_id: int,
           rules: TokenRules = TokenRules(), device=None) -> List[List[SequenceOutput]]:
    """Decode `batch_size` sequences from their start states.

    Args:
        step: the model's step (previous tokens -> next-token log-probabilities, new state).
        reorder: selects rows of a state.
        state: the start state of each of the batch_size rows.
        batch_size: number of sources.
        cfg: the options; cfg.eos_token_id ends a sequence (it is kept as the last token id).
        bos_id: the token fed first.
        rules: token sequences never to produce, DRY's breakers.
        device: where the tokens live.

    Returns, per source, num_return_sequences outputs (the best first for beam search).
    """
    if cfg.num_beams > 1:
        return _beam(step, reorder, state, batch_size, cfg, bos_id, rules, device)
    return _sample(step, reorder, state, batch_size, cfg, bos_id, rules, device)


def _sample(step, reorder, state, B: int, cfg: GenerationConfig, bos_id: int, rules: TokenRules, device):
    n = cfg.num_return_sequences
    N = B * n
    if n > 1:
        state = reorder(state, torch.arange(B, device=device).repeat_interleave(n))
    outs = [SequenceOutput([], "length", [] if cfg.logprobs else None) for _ in range(N)]
    alive = list(range(N))  # the output each current row writes to
    tokens = torch.full((N,), bos_id, dtype=torch.long, device=device)
    gen = torch.Generator().manual_seed(cfg.seed) if cfg.seed is not None else None
    history: Optional[History] = None
    for _ in range(cfg.max_new_tokens):
        logp, state = step(tokens, state)
        if history is None:
            history = History(logp.shape[-1], logp.device)
            history.add([[bos_id]] * N, cfg, rules, cfg.eos_token_id)
        scores = apply_processors(logp.clone(), history) if history.has_processors else logp
        if cfg.greedy:
            new = scores.argmax(-1)
        else:
            u = torch.rand(len(alive), generator=gen, dtype=torch.float64)
            new = sample(warp(scores, history.params).softmax(-1), u.to(scores.device))
        history.append(new)
        lps = logp.gather(-1, new[:, None]).squeeze(-1).tolist() if cfg.logprobs else None
        keep = []
        for r, tok in enumerate(new.tolist()):
            o = outs[alive[r]]
            o.token_ids.append(tok)
            if lps is not None:
                o.logprobs.append(lps[r])
            if tok == cfg.eos_token_id:
                o.finish_reason = "eos"
            else:
                keep.append(r)
        if not keep:
            break
        if len(keep) < len(alive):  # finished rows leave the batch
            idx = torch.tensor(keep, device=new.device)
            state, new = reorder(state, idx), new[idx]
            history.keep(keep)
            alive = [alive[r] for r in keep]
        tokens = new
    return [outs[b * n:(b + 1) * n] for b in range(B)]


def _beam(step, reorder, state, B: int, cfg: GenerationConfig, bos_id: int, rules: TokenRules, device):
    """Beam search for every source at once: rows b*K .. b*K+K-1 are source b's beams.

    A hypothesis scores sum(logprob) / length ** length_penalty. A source is done when num_beams
    hypotheses have ended with eos (early_stopping) or none is left; done sources leave the batch.
    """
    K = cfg.num_beams
    state = reorder(state, torch.arange(B, device=device).repeat_interleave(K))
    tokens = torch.full((B * K,), bos_id, dtype=torch.long, device=device)
    scores_k = torch.zeros(B, K, device=device)
    scores_k[:, 1:] = float("-inf")  # all beams start identical: expand only the first
    sources = list(range(B))  # the source of each block of K rows
    finished: List[List[SequenceOutput]] = [[] for _ in range(B)]
    seqs: List[List[int]] = [[] for _ in range(B * K)]
    logps: List[List[float]] = [[] for _ in range(B * K)]
    history: Optional[History] = None

    def score(total: float, length: int) -> float:
        return total / max(length, 1) ** cfg.length_penalty

    for t in range(cfg.max_new_tokens):
        logp, state = step(tokens, state)
        if history is None:
            history = History(logp.shape[-1], logp.device)
            history.add([[bos_id]] * (B * K), cfg, rules, cfg.eos_token_id)
        scores = apply_processors(logp.clone(), history) if history.has_processors else logp
        V = scores.shape[-1]
        cand = (scores_k.view(-1, 1) + scores).view(len(sources), K * V)
        top_s, top_i = cand.topk(min(2 * K, K * V), dim=-1)
        step_lp = logp.view(len(sources), K * V).gather(-1, top_i)
        rows, toks, lps, new_scores, live = [], [], [], [], []
        for j, b in enumerate(sources):
            kept = 0
            for s, i, lp in zip(top_s[j].tolist(), top_i[j].tolist(), step_lp[j].tolist()):
                if s == float("-inf"):
                    break
                beam, tok = divmod(i, V)
                r = j * K + beam
                if tok == cfg.eos_token_id:
                    ids = seqs[r] + [tok]
                    finished[b].append(SequenceOutput(ids, "eos", logps[r] + [lp], score=score(s, len(ids))))
                    continue
                rows.append(r)
                toks.append(tok)
                lps.append(lp)
                new_scores.append(s)
                kept += 1
                if kept == K:
                    break
            done = kept == 0 or (cfg.early_stopping and len(finished[b]) >= K)
            if done:
                for lst in (rows, toks, lps, new_scores):
                    del lst[len(lst) - kept:]
                continue
            while kept < K:  # fewer live candidates than beams: pad with dead copies
                rows.append(rows[-1])
                toks.append(toks[-1])
                lps.append(lps[-1])
                new_scores.append(float("-inf"))
                kept += 1
            live.append(b)
        if not live:
            sources = []
            break
        seqs = [seqs[r] + [tk] for r, tk in zip(rows, toks)]
        logps = [logps[r] + [lp] for r, lp in zip(rows, lps)]
        idx = torch.tensor(rows, device=logp.device)
        state = reorder(state, idx)
        history.keep(rows)
        tokens = torch.tensor(toks, device=logp.device)
        history.append(tokens)
        scores_k = torch.tensor(new_scores, device=logp.device).view(len(live), K)
        sources = live
    for j, b in enumerate(sources):  # beams still running at max_new_tokens
        for k in range(K):
            s = float(scores_k[j, k])
            if s > float("-inf") and seqs[j * K + k]:
                r = j * K + k
                finished[b].append(SequenceOutput(seqs[r], "length", logps[r], score=score(s, len(seqs[r]))))
    out = []
    for b in range(B):
        best = sorted(finished[b], key=lambda o: o.score, reverse=True)[:cfg.num_return_sequences]
        for o in best:
            o.logprobs = o.logprobs if cfg.logprobs else None
        out.append(best)
    return out
