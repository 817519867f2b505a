"""Logits processors: small functions (B, V) -> (B, V), composed in Hugging Face's order.

Penalties and bans see the text so far through a `History` (prompt and generated tokens of every row),
kept incrementally so that no processor rescans the text at each step. Warpers (temperature, top-k,
top-p, typical-p, min-p) reshape the distribution for sampling only; beam search uses the rest.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

import torch
from torch import Tensor

from .config import GenerationConfig

Processor = Callable[[Tensor, "History"], Tensor]
NEG_INF = float("-inf")


class History:
    """The tokens of every row so far, with the aggregates the processors need.

    Args:
        prompts: the prompt ids of each row.
        vocab_size: V.
        ngram: no_repeat_ngram_size (0: no n-gram index is kept).
        device: where the (B, V) tensors live.
        counts: keep the seen/count tensors (only the penalties need them; decoding skips them otherwise).
    """

    def __init__(self, prompts: Sequence[Sequence[int]], vocab_size: int, ngram: int = 0, device="cpu",
                 counts: bool = True) -> None:
        B = len(prompts)
        self.tokens: List[List[int]] = [list(p) for p in prompts]
        self.prompt_lens = [len(p) for p in prompts]
        self.track = counts
        self.seen = torch.zeros(B, vocab_size if counts else 0, dtype=torch.bool, device=device)
        self.counts = torch.zeros(B, vocab_size if counts else 0, device=device)
        for b, p in enumerate(prompts):
            if len(p) and counts:
                self.seen[b, torch.as_tensor(list(p), device=device)] = True
        self.n = ngram
        self.ngrams: List[Dict[Tuple[int, ...], Set[int]]] = [{} for _ in range(B)]
        if ngram:
            for b in range(B):
                for i in range(len(self.tokens[b]) - ngram + 1):
                    self._index(b, i)

    def _index(self, b: int, i: int) -> None:
        toks = self.tokens[b]
        self.ngrams[b].setdefault(tuple(toks[i:i + self.n - 1]), set()).add(toks[i + self.n - 1])

    @property
    def generated(self) -> int:
        """Tokens generated so far (the same for every row)."""
        return len(self.tokens[0]) - self.prompt_lens[0] if self.tokens else 0

    def append(self, new: Tensor) -> None:
        """Record one new token per row."""
        if self.track:
            rows = torch.arange(len(self.tokens), device=self.seen.device)
            self.seen[rows, new] = True
            self.counts[rows, new] += 1
        for b, t in enumerate(new.tolist()):
            self.tokens[b].append(t)
            if self.n and len(self.tokens[b]) >= self.n:
                self._index(b, len(self.tokens[b]) - self.n)

    def reorder(self, idx: Tensor) -> None:
        """Rows take the history of rows `idx` (beam search)."""
        order = idx.tolist()
        self.tokens = [list(self.tokens[i]) for i in order]
        self.prompt_lens = [self.prompt_lens[i] for i in order]
        self.ngrams = [{k: set(v) for k, v in self.ngrams[i].items()} for i in order]
        self.seen, self.counts = self.seen[idx], self.counts[idx]


# -- processors ------------------------------------------------------------------------------------------
def repetition_penalty(penalty: float) -> Processor:
    """CTRL's penalty on every token already in the text (prompt included)."""
    def apply(logits: Tensor, h: History) -> Tensor:
        penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
        return torch.where(h.seen, penalized, logits)
    return apply


def presence_frequency_penalty(presence: float, frequency: float) -> Processor:
    """OpenAI's penalties over the generated tokens: logit -= presence * [count > 0] + frequency * count."""
    def apply(logits: Tensor, h: History) -> Tensor:
        return logits - presence * (h.counts > 0) - frequency * h.counts
    return apply


def logit_bias(bias: Dict[int, float], vocab_size: int) -> Processor:
    vec = torch.zeros(vocab_size)
    for i, v in bias.items():
        if 0 <= i < vocab_size:
            vec[i] = v

    def apply(logits: Tensor, h: History) -> Tensor:
        return logits + vec.to(logits.device)
    return apply


def no_repeat_ngram(n: int) -> Processor:
    """Ban every token that would complete an n-gram already in the row's text."""
    def apply(logits: Tensor, h: History) -> Tensor:
        for b, toks in enumerate(h.tokens):
            if len(toks) >= n - 1:
                banned = h.ngrams[b].get(tuple(toks[len(toks) - n + 1:]) if n > 1 else (), ())
                if banned:
                    logits[b, list(banned)] = NEG_INF
        return logits
    return apply


def bad_words(sequences: List[List[int]]) -> Processor:
    """Ban the last token of each sequence wherever the row ends with the rest of it."""
    singles = sorted({s[0] for s in sequences if len(s) == 1})

    def apply(logits: Tensor, h: History) -> Tensor:
        if singles:
            logits[:, singles] = NEG_INF
        for seq in sequences:
            if len(seq) > 1:
                head = seq[:-1]
                for b, toks in enumerate(h.tokens):
                    if toks[len(toks) - len(head):] == head:
                        logits[b, seq[-1]] = NEG_INF
        return logits
    return apply


def min_new_tokens(minimum: int, eos_id: int) -> Processor:
    def apply(logits: Tensor, h: History) -> Tensor:
        if h.generated < minimum:
            logits[:, eos_id] = NEG_INF
        return logits
    return apply


def needs_counts(cfg: GenerationConfig) -> bool:
    """Whether any processor reads History.seen / History.counts."""
    return cfg.repetition_penalty != 1.0 or bool(cfg.presence_penalty or cfg.frequency_penalty)


def build_processors(cfg: GenerationConfig, vocab_size: int, bad_word_ids: List[List[int]],
                     eos_id: Optional[int], banned: Sequence[int] = ()) -> List[Processor]:
    """The processors `cfg` asks for, in Hugging Face's order (penalties, bias, bans)."""
    procs: List[Processor] = []
    if cfg.repetition_penalty != 1.0:
        procs.append(repetition_penalty(cfg.repetition_penalty))
    if cfg.presence_penalty or cfg.frequency_penalty:
        procs.append(presence_frequency_penalty(cfg.presence_penalty, cfg.frequency_penalty))
    if cfg.logit_bias:
        procs.append(logit_bias(cfg.logit_bias, vocab_size))
    if cfg.no_repeat_ngram_size:
        procs.append(no_repeat_ngram(cfg.no_repeat_ngram_size))
    ban = [[t] for t in banned] + bad_word_ids
    if ban:
        procs.append(bad_words(ban))
    if cfg.min_new_tokens and eos_id is not None:
        procs.append(min_new_tokens(cfg.min_new_tokens, eos_id))
    return procs


# -- warpers (sampling) ----------------------------------------------------------------------------------
def warp(logits: Tensor, cfg: GenerationConfig) -> Tensor:
    """Temperature, top-k, top-p (Holtzman et al. 2020), typical-p (Meister et al. 2022), min-p."""
    logits = logits / cfg.temperature
    if cfg.top_k:
        kth = torch.topk(logits, min(cfg.top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, NEG_INF)
    if cfg.top_p < 1.0:
        logits = _keep_sorted_mass(logits, logits, cfg.top_p)
    if cfg.typical_p < 1.0:
        logp = logits.log_softmax(-1)
        entropy = -(logp.exp() * logp.nan_to_num(neginf=0.0)).sum(-1, keepdim=True)
        surprise_gap = (-logp - entropy).abs()  # distance from the expected information content
        logits = _keep_sorted_mass(logits, -surprise_gap, cfg.typical_p)
    if cfg.min_p > 0.0:
        probs = logits.softmax(-1)
        logits = logits.masked_fill(probs < cfg.min_p * probs.max(-1, keepdim=True).values, NEG_INF)
    return logits


def _keep_sorted_mass(logits: Tensor, key: Tensor, mass: float) -> Tensor:
    """Keep the tokens with the largest `key` until their probability reaches `mass` (at least one)."""
    order = torch.argsort(key, dim=-1, descending=True)
    probs = logits.softmax(-1).gather(-1, order)
    drop_sorted = probs.cumsum(-1) - probs >= mass  # the tokens before it already reach the mass
    drop_sorted[..., 0] = False  # the first always stays (a mass that underflows float32 must not drop it)
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, NEG_INF)
