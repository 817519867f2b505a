"""Logits processors and warpers over a batch of rows, each row with its own options.

Rows of one batch may come from different requests (the server steps them together), so every option
lives in a per-row tensor and each processor is one batched tensor operation; a feature no row uses
costs nothing. `History` holds each row's tokens (prompt and generated) and options; it is kept
incrementally, so no processor rescans the text at each step. Processors (penalties, bias, bans) run
in Hugging Face's order and serve sampling and beam search; warpers (temperature, top-k, top-p,
min-p, typical-p) reshape the distribution for sampling only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, FrozenSet, List, Optional, Sequence, Set, Tuple

import numpy as np
import torch
from torch import Tensor

from .config import GenerationConfig

NEG_INF = float("-inf")


def needs_counts(cfg: GenerationConfig) -> bool:
    """Whether a row with these options reads History.seen / History.counts (only the penalties do)."""
    return cfg.repetition_penalty != 1.0 or bool(cfg.presence_penalty or cfg.frequency_penalty)


@dataclass(frozen=True)
class TokenRules:
    """What a request's options mean in the tokenizer's terms (TextGenerator works them out).

    Args:
        bans: token sequences never to produce (bad words, <unk>).
        breakers: tokens that end a repeat for DRY (those whose text holds a dry_sequence_breakers string).
    """

    bans: Tuple[Tuple[int, ...], ...] = ()
    breakers: FrozenSet[int] = frozenset()


@dataclass
class RowParams:
    """The rows' options as tensors, rebuilt whenever rows join or leave (see History.params)."""

    greedy: Tensor  # (B,) bool
    temperature: Tensor  # (B, 1); 1 for greedy rows (they take the argmax before any warping)
    top_k: Tensor  # (B,) long; 0: off
    top_k_max: int  # the largest top_k of any row (known here, so warping never asks the device)
    top_p_drop: Tensor  # (B, 1) 1 - top_p: the least likely tokens whose mass stays within it go; -inf: off
    typical_p: Tensor  # (B, 1); inf: off
    min_p: Tensor  # (B, 1); 0: off
    repetition: Tensor  # (B, 1); 1: off
    presence: Tensor  # (B, 1)
    frequency: Tensor  # (B, 1)
    bias: Optional[Tensor]  # (B, V) logit_bias, None when no row has one
    banned: Optional[Tensor]  # (B, V) bool: single-token bans, None when no row has one
    use_temperature: bool  # some row's temperature is not 1
    use_top_k: bool
    use_top_p: bool
    use_typical_p: bool
    use_min_p: bool
    any_greedy: bool
    any_sample: bool
    any_logprobs: bool
    top_logprobs: int  # the most top-logprob entries any row asks for


class History:
    """The rows being decoded: their tokens so far, their options, and what the penalties need.

    Args:
        vocab_size: V.
        device: where the (B, V) tensors live.
    """

    def __init__(self, vocab_size: int, device="cpu") -> None:
        self.V, self.device = vocab_size, torch.device(device)
        self.tokens: List[List[int]] = []
        self.prompt_lens: List[int] = []
        self.cfgs: List[GenerationConfig] = []
        self.bans: List[List[List[int]]] = []  # token sequences each row must not produce
        self.breakers: List[FrozenSet[int]] = []  # tokens that end a repeat, per row (DRY)
        self.eos: List[Optional[int]] = []
        self.ngrams: List[Dict[Tuple[int, ...], Set[int]]] = []
        self.seen: Optional[Tensor] = None  # (B, V) token in the text; made when a row needs it
        self.counts: Optional[Tensor] = None  # (B, V) times generated
        self._params: Optional[RowParams] = None
        self._stepwise = self._has_processors = False  # made with _params

    def __len__(self) -> int:
        return len(self.tokens)

    def add(self, prompts: Sequence[Sequence[int]], cfg: GenerationConfig, rules: TokenRules = TokenRules(),
            eos_id: Optional[int] = None) -> None:
        """New rows, one per prompt, all with the options `cfg` and the token rules `rules`."""
        start, n = len(self.tokens), len(prompts)
        self.tokens += [list(p) for p in prompts]
        self.prompt_lens += [len(p) for p in prompts]
        self.cfgs += [cfg] * n
        self.bans += [[list(s) for s in rules.bans if len(s)]] * n  # one list for these rows, never changed
        self.breakers += [rules.breakers] * n
        self.eos += [eos_id] * n
        self.ngrams += [{} for _ in prompts]
        if cfg.no_repeat_ngram_size:
            for b in range(start, start + n):
                for i in range(len(self.tokens[b]) - cfg.no_repeat_ngram_size + 1):
                    self._index(b, i)
        if self.seen is not None:
            seen, counts = self._count_rows(range(start, len(self.tokens)))
            self.seen, self.counts = torch.cat([self.seen, seen]), torch.cat([self.counts, counts])
        elif needs_counts(cfg):
            self.seen, self.counts = self._count_rows(range(len(self.tokens)))
        self._params = None

    def _count_rows(self, rows) -> Tuple[Tensor, Tensor]:
        rows = list(rows)
        seen = torch.zeros(len(rows), self.V, dtype=torch.bool, device=self.device)
        counts = torch.zeros(len(rows), self.V, device=self.device)
        for i, b in enumerate(rows):
            if self.tokens[b]:
                seen[i, torch.as_tensor(self.tokens[b], device=self.device)] = True
            gen = torch.as_tensor(self.tokens[b][self.prompt_lens[b]:], dtype=torch.long, device=self.device)
            counts[i] = torch.bincount(gen, minlength=self.V).float()
        return seen, counts

    def _index(self, b: int, i: int) -> None:
        n, toks = self.cfgs[b].no_repeat_ngram_size, self.tokens[b]
        self.ngrams[b].setdefault(tuple(toks[i:i + n - 1]), set()).add(toks[i + n - 1])

    def generated(self, b: int) -> int:
        """Tokens row b has generated so far."""
        return len(self.tokens[b]) - self.prompt_lens[b]

    def append(self, new: Tensor, skip: Optional[Sequence[bool]] = None) -> None:
        """Record one new token per row (except rows where `skip` is True: they are still reading their
        prompt, which the history already holds)."""
        keep = None if skip is None else [b for b, s in enumerate(skip) if not s]
        if self.seen is not None:
            rows = torch.arange(len(self.tokens), device=self.device) if keep is None else \
                torch.tensor(keep, dtype=torch.long, device=self.device)
            self.seen[rows, new[rows]] = True
            self.counts[rows, new[rows]] += 1
        for b, t in enumerate(new.tolist()):
            if skip is not None and skip[b]:
                continue
            self.tokens[b].append(t)
            n = self.cfgs[b].no_repeat_ngram_size
            if n and len(self.tokens[b]) >= n:
                self._index(b, len(self.tokens[b]) - n)

    def keep(self, idx: Sequence[int]) -> None:
        """Keep rows `idx`, in that order (a row may repeat: beam search copies its beams)."""
        idx = list(idx)
        if len(set(idx)) == len(idx):  # rows dropped or reordered: each keeps its own lists
            self.tokens = [self.tokens[i] for i in idx]
            self.ngrams = [self.ngrams[i] for i in idx]
        else:  # a repeated row gets copies, so that the two grow apart
            self.tokens = [list(self.tokens[i]) for i in idx]
            self.ngrams = [{k: set(v) for k, v in self.ngrams[i].items()} for i in idx]
        for name in ("prompt_lens", "cfgs", "bans", "breakers", "eos"):
            setattr(self, name, [getattr(self, name)[i] for i in idx])
        if self.seen is not None:
            t = torch.as_tensor(idx, dtype=torch.long, device=self.device)
            self.seen, self.counts = self.seen[t], self.counts[t]
        self._params = None

    @property
    def params(self) -> RowParams:
        if self._params is None:
            self._params = self._build_params()
        return self._params

    def _build_params(self) -> RowParams:
        # Rows added together share one GenerationConfig (and one list of bans): each column is made once
        # per distinct object and spread to the rows by index, not built row by row (at batch 1,024 the
        # per-row loops took 5 ms, more than an H200's 32-step block).
        dev, inf = self.device, float("inf")
        index: Dict[int, int] = {}
        which = torch.tensor([index.setdefault(id(c), len(index)) for c in self.cfgs], dtype=torch.long)
        cfgs = list({id(c): c for c in self.cfgs}.values())  # in the order of `index`

        def per_row(values, dtype=torch.float32) -> Tensor:
            return torch.tensor(values, dtype=dtype)[which].to(dev)

        def col(values) -> Tensor:
            return per_row(values)[:, None]

        greedy = [c.greedy for c in cfgs]
        bias = banned = None
        if any(c.logit_bias for c in cfgs):
            bias = torch.zeros(len(cfgs), self.V)
            for b, c in enumerate(cfgs):
                for i, v in c.logit_bias.items():
                    if 0 <= i < self.V:
                        bias[b, i] = v
            bias = bias[which].to(dev)
        ban_lists = list({id(row): row for row in self.bans}.values())
        # what decides the path (has_processors, stepwise), worked out here once for the same rows
        by_text = self.seen is not None or any(c.no_repeat_ngram_size or c.min_new_tokens or c.dry_multiplier
                                               for c in cfgs)
        self._stepwise = by_text or any(c.logprobs for c in cfgs) or \
            any(len(s) > 1 for row in ban_lists for s in row)
        self._has_processors = by_text or any(c.logit_bias for c in cfgs) or any(ban_lists)
        if any(len(s) == 1 for row in ban_lists for s in row):
            banned = torch.zeros(len(self.bans), self.V, dtype=torch.bool, device=dev)
            for b, row in enumerate(self.bans):
                singles = [s[0] for s in row if len(s) == 1 and 0 <= s[0] < self.V]
                if singles:
                    banned[b, singles] = True
        return RowParams(
            greedy=per_row(greedy, torch.bool),
            temperature=col([1.0 if c.greedy else c.temperature for c in cfgs]),
            # a top_k above the vocabulary keeps every token (as transformers clamps it)
            top_k=per_row([min(c.top_k or 0, self.V) for c in cfgs], torch.long),
            top_k_max=self.V if any(not c.top_k for c in cfgs) else min(max(c.top_k for c in cfgs), self.V),
            top_p_drop=col([1 - c.top_p if c.top_p < 1.0 else -inf for c in cfgs]),
            typical_p=col([c.typical_p if c.typical_p < 1.0 else inf for c in cfgs]),
            min_p=col([c.min_p for c in cfgs]),
            repetition=col([c.repetition_penalty for c in cfgs]),
            presence=col([c.presence_penalty for c in cfgs]),
            frequency=col([c.frequency_penalty for c in cfgs]),
            bias=bias, banned=banned,
            use_temperature=any(not c.greedy and c.temperature != 1.0 for c in cfgs),
            use_top_k=any(c.top_k for c in cfgs), use_top_p=any(c.top_p < 1.0 for c in cfgs),
            use_typical_p=any(c.typical_p < 1.0 for c in cfgs), use_min_p=any(c.min_p > 0 for c in cfgs),
            any_greedy=any(greedy), any_sample=not all(greedy),
            any_logprobs=any(c.logprobs for c in cfgs),
            top_logprobs=max((c.top_logprobs for c in cfgs), default=0))

    @property
    def has_processors(self) -> bool:
        """Whether any processor would change some row's logits."""
        return self.params is not None and self._has_processors  # made (and cached) with params

    @property
    def stepwise(self) -> bool:
        """Whether some row needs the text so far or reports per token (penalties, n-gram or multi-token
        bans, DRY, min_new_tokens, logprobs), so that its choices cannot run as a block on the device."""
        return self.params is not None and self._stepwise


# -- processors ------------------------------------------------------------------------------------------
def apply_processors(logits: Tensor, h: History) -> Tensor:
    """Bias, penalties and bans for every row, in Hugging Face's order (logit_bias as its sequence_bias,
    repetition penalty, no-repeat n-grams, bad words, min_new_tokens; OpenAI's presence and frequency
    penalties and DRY, which it lacks, after the repetition penalty); may write into `logits`."""
    P = h.params
    if P.bias is not None:
        logits = logits + P.bias
    if h.seen is not None:
        # CTRL's repetition penalty (Keskar et al. 2019) on every token already in the text, prompt
        # included; then OpenAI's presence/frequency penalties over the generated tokens.
        penalized = torch.where(logits > 0, logits / P.repetition, logits * P.repetition)
        logits = torch.where(h.seen, penalized, logits)
        logits = logits - P.presence * (h.counts > 0) - P.frequency * h.counts
    for b, cfg in enumerate(h.cfgs):
        if cfg.dry_multiplier:
            toks, pens = dry_penalties(h.tokens[b], cfg, h.breakers[b])
            if len(toks):
                logits[b, torch.from_numpy(toks).to(logits.device)] -= torch.from_numpy(pens).to(logits)
    for b, cfg in enumerate(h.cfgs):
        n, toks = cfg.no_repeat_ngram_size, h.tokens[b]
        if n and len(toks) >= n - 1:  # ban every token that would complete an n-gram already in the text
            banned = h.ngrams[b].get(tuple(toks[len(toks) - n + 1:]) if n > 1 else (), ())
            if banned:
                logits[b, list(banned)] = NEG_INF
    if P.banned is not None:
        logits = logits.masked_fill(P.banned, NEG_INF)
    for b, row in enumerate(h.bans):  # a sequence's last token is banned where the row ends with the rest
        for seq in row:
            if len(seq) > 1 and h.tokens[b][len(h.tokens[b]) - len(seq) + 1:] == seq[:-1]:
                logits[b, seq[-1]] = NEG_INF
    for b, cfg in enumerate(h.cfgs):
        if cfg.min_new_tokens and h.eos[b] is not None and h.generated(b) < cfg.min_new_tokens:
            logits[b, h.eos[b]] = NEG_INF
    return logits


DRY_MAX_MATCH = 64  # repeats are measured up to this length: at 1.75 ** 62 the penalty is a ban already


def dry_penalties(tokens: Sequence[int], cfg: GenerationConfig,
                  breakers: FrozenSet[int]) -> Tuple[np.ndarray, np.ndarray]:
    """DRY, "don't repeat yourself" (p-e-w 2024, as text-generation-webui and llama.cpp compute it): the
    tokens that would extend a repeat, and what each loses from its logit.

    Every earlier occurrence of the text's last token is a candidate: the repeat's length is how many
    tokens before it match the tokens before the end (stopping at a breaker), and the token that followed
    it would make the repeat one longer. A token followed several repeats: the longest counts. Those of
    length >= dry_allowed_length lose dry_multiplier * dry_base ** (length - dry_allowed_length).
    Vectorised over the occurrences: one pass per token of repeat length, not per occurrence.
    """
    none = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    ctx = np.asarray(tokens[-cfg.dry_penalty_last_n:] if cfg.dry_penalty_last_n else tokens, dtype=np.int64)
    end = len(ctx) - 1
    if end < 1 or int(ctx[-1]) in breakers:
        return none
    at = np.flatnonzero(ctx[:-1] == ctx[-1])  # earlier occurrences of the last token
    nxt = ctx[at + 1]
    if breakers:
        keep = ~np.isin(nxt, np.fromiter(breakers, dtype=np.int64))
        at, nxt = at[keep], nxt[keep]
    length = np.ones(len(at), dtype=np.int64)
    alive = np.ones(len(at), dtype=bool)
    for k in range(1, min(end, DRY_MAX_MATCH)):
        prev = int(ctx[end - k])
        if prev in breakers:
            break
        alive &= (at >= k) & (ctx[np.maximum(at - k, 0)] == prev)
        if not alive.any():
            break
        length += alive
    long = length >= cfg.dry_allowed_length
    if not long.any():
        return none
    toks, best = np.unique(nxt[long], return_inverse=True)
    longest = np.zeros(len(toks), dtype=np.int64)
    np.maximum.at(longest, best, length[long])
    pens = cfg.dry_multiplier * cfg.dry_base ** (longest - cfg.dry_allowed_length).astype(np.float64)
    return toks, pens.astype(np.float32)


# -- warpers (sampling) ----------------------------------------------------------------------------------
def warp(logits: Tensor, P: RowParams) -> Tensor:
    """Temperature, top-k, top-p (Holtzman et al. 2020), min-p, typical-p (Meister et al. 2022) with the
    rows' options `P` (History.params): Hugging Face's warpers, in its order and with its arithmetic, so
    that a row's choices, ties at every cut-off included, are transformers' for the same logits."""
    if P.use_temperature:
        logits = logits / P.temperature
    if P.use_top_k:  # ties with the k-th are kept
        k = torch.where(P.top_k > 0, P.top_k, logits.shape[-1]).clamp(max=logits.shape[-1])
        top = torch.topk(logits, min(P.top_k_max, logits.shape[-1]), dim=-1).values
        kth = top.gather(-1, k[:, None] - 1)
        logits = logits.masked_fill(logits < kth, NEG_INF)
    if P.use_top_p:  # from the least likely up: drop while the dropped mass stays <= 1 - top_p
        low, order = torch.sort(logits, descending=False)
        drop = low.softmax(-1).cumsum(-1) <= P.top_p_drop
        drop[..., -1] = False  # the most likely token always stays
        logits = logits.masked_fill(drop.scatter(1, order, drop), NEG_INF)
    if P.use_min_p:
        probs = logits.softmax(-1)
        logits = logits.masked_fill(probs < P.min_p * probs.amax(-1, keepdim=True), NEG_INF)
    if P.use_typical_p:  # keep the tokens nearest the entropy until their mass reaches typical_p, and ties
        logp = logits.log_softmax(-1)
        entropy = -(logp * logp.exp()).nansum(-1, keepdim=True)
        gap, order = torch.sort((-logp - entropy).abs(), descending=False)
        last = (logits.gather(-1, order).softmax(-1).cumsum(-1) < P.typical_p).sum(-1, keepdim=True)
        drop = gap > gap.gather(-1, last.clamp_(max=gap.shape[-1] - 1))
        drop[..., 0] = False
        logits = logits.masked_fill(drop.scatter(1, order, drop), NEG_INF)
    return logits


def sample(probs: Tensor, uniforms: Tensor) -> Tensor:
    """Inverse-CDF sampling: row b takes the first token whose cumulative probability passes
    uniforms[b] x its total. One uniform per row lets each row draw from its own generator, so a
    seeded request gives the same text whatever else shares the batch."""
    cdf = probs.cumsum(-1)
    x = uniforms[:, None].to(cdf) * cdf[:, -1:]
    tok = torch.searchsorted(cdf, x, right=True).squeeze(-1).clamp_max(probs.shape[-1] - 1)
    zero = probs.gather(-1, tok[:, None]).squeeze(-1) == 0  # x rounded up to the total: rare
    if bool(zero.any()):
        tok = torch.where(zero, probs.argmax(-1), tok)
    return tok
