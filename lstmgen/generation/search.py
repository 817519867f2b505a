"""Batched search over any step function: greedy and sampling for a batch of sources at once, and beam
search (beam.py) through the same two functions.

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

from .beam import beam_search
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
        bos = torch.full((batch_size * cfg.num_beams,), bos_id, dtype=torch.long, device=device)
        return beam_search(lambda tokens, st: step(bos if tokens is None else tokens, st),
                           lambda st, index: reorder(st, index.to(bos.device)), state, [[bos_id]] * batch_size,
                           cfg, rules)
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
