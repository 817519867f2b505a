"""The continuous cache: a language model's own recent hidden states as a pointer to recent words.

Grave, Joulin and Usunier 2017 ("Improving Neural Language Models with a Continuous Cache", eq. 2-4): keep
the last `window` pairs (h_j, x_{j+1}) of the text scored so far; the cache's probability of word w at
step t is the softmax over j of theta * h_t . h_j, summed over the j whose next word was w, and the
prediction mixes it with the model's own: p(w) = (1 - lambda) p_vocab(w) + lambda p_cache(w). Nothing is
trained; theta and lambda are chosen on the validation split. AWD-LSTM reports it as a post-processing
step (its pointer.py): Penn Treebank 58.8 -> 52.5 test, WikiText-2 65.6 -> 50.6, with window 500, theta
1.0, lambda 0.1 on PTB and window 3785, theta 0.662, lambda 0.1279 on WikiText-2.

Only the probability of the word that actually comes next is needed to score a text, so the cache's share
is a masked sum over a band of a (chunk x window) matrix of dot products: no vocabulary-sized vectors.
One difference from pointer.py: the cache is used from the second token on, over whatever history there
is, instead of only once `window` positions are stored (it changes the first `window` tokens' scores).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Iterable, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserInputError, check_range

# The grid tune() searches when none is given: Grave et al. tune theta and lambda on validation data;
# AWD-LSTM's chosen values (theta 0.662-1.0, lambda 0.1-0.13) lie inside it. A narrow LSTM's outputs have
# smaller dot products, so its best theta is larger: the grid goes on to 5.
THETAS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0)
LAMBDAS = (0.02, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3)


@dataclass
class CacheConfig:
    """The continuous cache's settings.

    Args:
        window: how many previous positions the cache holds.
        theta: the sharpness of its attention (a scale on the dot products h_t . h_j).
        lam: the cache's weight in the mixture with the model's distribution.
    """

    window: int = 500
    theta: float = 1.0
    lam: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.window, bool) or not isinstance(self.window, int):
            raise UserInputError(f"cache window must be a whole number, got {self.window!r}")
        check_range("cache window", self.window, 1)
        check_range("cache theta", self.theta, 0.0)
        check_range("cache lambda", self.lam, 0.0, 1.0)


@torch.no_grad()
def stream_outputs(model, ids, device="cpu", bptt: int = 1000) -> Tuple[Tensor, Tensor, Tensor]:
    """Run `ids` through the model as one stream (the state carried): the last layer's output h_t at every
    position (N, H), the target ids x_{t+1} (N,) and the model's log-probability of each target (N,), all
    on `device` in float32. N = len(ids) - 1. `bptt` only sets the size of each forward call."""
    model.eval()
    ids = torch.from_numpy(np.asarray(ids, dtype=np.int64))
    state, hs, lps = model.init_state(1, device), [], []
    for s in range(0, len(ids) - 1, bptt):
        x = ids[s:min(s + bptt, len(ids) - 1)].to(device)[None]
        y = ids[s + 1:s + 1 + x.shape[1]].to(device)
        logits, state, (h, _) = model(x, state, return_hidden=True)
        lps.append(F.log_softmax(logits[0].float(), -1).gather(-1, y[:, None]).squeeze(-1))
        hs.append(h[0].float())
    return torch.cat(hs), ids[1:].to(device), torch.cat(lps)


def cache_probs(h: Tensor, targets: Tensor, window: int, theta: float, chunk: int = 512) -> Tensor:
    """p_cache(targets[t]) for every t: softmax over j in [t - window, t) of theta * h_t . h_j, summed over
    the j with targets[j] == targets[t]; 0 at t = 0 (an empty cache).

    Args:
        h: (N, H) hidden states, in text order.
        targets: (N,) the word that followed each position.
        window: positions the cache holds.
        theta: attention sharpness.
        chunk: positions scored per matrix product (memory: chunk x (chunk + window) floats).
    """
    N, out = h.shape[0], []
    for s in range(0, N, chunk):
        e = min(s + chunk, N)
        k0 = max(0, s - window)  # the oldest position any row of this chunk may read
        scores = theta * (h[s:e] @ h[k0:e].T)  # (C, e - k0)
        t = torch.arange(s, e, device=h.device)[:, None]
        j = torch.arange(k0, e, device=h.device)[None, :]
        band = (j < t) & (j >= t - window)
        attn = torch.softmax(scores.masked_fill(~band, -math.inf), -1).nan_to_num(0.0)  # row t=0: all masked
        same = targets[k0:e][None, :] == targets[s:e, None]
        out.append((attn * same).sum(-1))
    return torch.cat(out) if out else h.new_zeros(0)


def mixed_nll(logp_vocab: Tensor, p_cache: Tensor, lam: float) -> float:
    """Mean negative log-likelihood of (1 - lam) p_vocab + lam p_cache, in float64. Position 0 has no cache
    and keeps the model's own probability."""
    lp = logp_vocab.double()
    keep = math.log1p(-lam) if lam < 1 else -math.inf  # log(1 - lam), log(lam): -inf at the ends
    mix = math.log(lam) if lam > 0 else -math.inf
    mixed = torch.logaddexp(lp + keep, torch.log(p_cache.double()) + mix)
    mixed[:1] = lp[:1]
    return float(-mixed.mean())


def tune(h: Tensor, targets: Tensor, logp_vocab: Tensor, window: int, thetas: Iterable[float] = THETAS,
         lams: Iterable[float] = LAMBDAS) -> Tuple[CacheConfig, float]:
    """The (theta, lambda) of the grid with the lowest loss on this text (meant for the validation split),
    and that loss."""
    best: Tuple[CacheConfig, float] = (CacheConfig(window, 0.0, 0.0), mixed_nll(logp_vocab, logp_vocab.exp(), 0.0))
    for theta in thetas:
        p = cache_probs(h, targets, window, theta)
        for lam in lams:
            loss = mixed_nll(logp_vocab, p, lam)
            if loss < best[1]:
                best = (CacheConfig(window, theta, lam), loss)
    return best


def cache_metrics(h: Tensor, targets: Tensor, logp_vocab: Tensor, cfg: CacheConfig) -> Dict[str, float]:
    """The loss and perplexity with the cache, and without it, over the same positions."""
    loss = mixed_nll(logp_vocab, cache_probs(h, targets, cfg.window, cfg.theta), cfg.lam)
    base = float(-logp_vocab.double().mean())
    return {"window": cfg.window, "theta": cfg.theta, "lambda": cfg.lam, "loss": loss,
            "perplexity": math.exp(min(loss, 50.0)), "loss_without": base,
            "perplexity_without": math.exp(min(base, 50.0))}


def report(model, ids, cfg: CacheConfig, device="cpu", tune_ids=None) -> Dict:
    """The cache's figures on `ids` (cache_metrics), with theta and lambda first chosen on `tune_ids` (the
    validation split; when it is `ids` itself the figure is optimistic: chosen and scored on one text)."""
    outputs = stream_outputs(model, ids, device)
    tuned = {}
    if tune_ids is not None:
        cfg, loss = tune(*(outputs if tune_ids is ids else stream_outputs(model, tune_ids, device)), cfg.window)
        tuned = {"tuned_on": "valid", "valid_perplexity": math.exp(min(loss, 50.0)), "optimistic": tune_ids is ids}
    return {**cache_metrics(*outputs, cfg), **tuned}
