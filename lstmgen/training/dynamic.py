"""Dynamic evaluation: the model goes on learning from the text it is scoring.

Krause et al. 2018 ("Dynamic Evaluation of Neural Sequence Models", section 5: RMS-normalised SGD with a
global decay prior). The text is read in segments of a few tokens as one stream; each segment is scored
first and then one gradient step on its loss adapts the weights to what was just read, while a decay pulls
them back toward the trained weights theta_0:

    theta <- theta - eta * grad / (RMS + eps) + lambda * decrate * (theta_0 - theta)

RMS is the root mean square of each weight's gradient over the training text (collected once, in eval
mode, segments of the same length); decrate = RMS / (the mean of the tensors' mean RMS), clipped at
1 / lambda so that a decay step never overshoots theta_0. Every token is scored before the model has
learned from it, so the figure is a fair online evaluation. The model's weights are restored afterwards.
The authors' code reports AWD-QRNN + dynamic evaluation at 51.4 / 50.5 (PTB) and 45.9 / 44.0 (WikiText-2)
with segments of 20 tokens, the length used here by default (3x faster than 5 for the same result there).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, replace
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..data import StreamBatcher
from ..errors import UserInputError, check_range

# The grid tune() searches, for segments of 5 tokens; both scale with the segment length, as in the
# authors' search. Their learning rates went from 3e-5 up; on this project's PTB medium model the best
# was lower (1e-4 for 20 tokens, i.e. 2.5e-5 for 5), so the list starts lower.
LRS_PER_5 = (1.5e-5, 2e-5, 3e-5, 4e-5, 6e-5)
LAMBDAS_PER_5 = (1e-3, 2e-3, 5e-3)
TUNE_TOKENS = 10_000  # tune() reads the first this many tokens of the validation split (the authors' "gridfast")


@dataclass
class DynamicConfig:
    """Dynamic evaluation's settings.

    Args:
        lr: eta, the step size of the RMS-normalised gradient step.
        lam: lambda, the decay toward the trained weights.
        eps: added to the RMS (stability for weights that had almost no gradient in training).
        bptt: tokens per segment: one update per segment.
        stat_batch: streams read at once when collecting the gradient RMS on the training text.
        stat_tokens: the most training tokens to collect it from (None: all of them).
    """

    lr: float = 1.2e-4  # the authors' values for 20-token segments on PTB
    lam: float = 2e-2
    eps: float = 2e-5
    bptt: int = 20
    stat_batch: int = 100
    stat_tokens: Optional[int] = None

    def __post_init__(self) -> None:
        for name in ("bptt", "stat_batch", "stat_tokens"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise UserInputError(f"dynamic evaluation's {name} must be a whole number, got {v!r}")
        check_range("dynamic lr", self.lr, 0.0)
        check_range("dynamic lambda", self.lam, 0.0, 1.0)
        check_range("dynamic eps", self.eps, 0.0, low_open=True)
        check_range("dynamic bptt", self.bptt, 1)
        check_range("dynamic stat_batch", self.stat_batch, 1)
        check_range("dynamic stat_tokens", self.stat_tokens, 1)


def _grad_context(device):
    """Gradients through the LSTM in eval mode: cuDNN refuses a backward pass outside training mode, so on a
    GPU its kernel is switched off here (the native one has no such rule); CPU kernels need nothing."""
    if torch.device(device).type == "cuda":
        return torch.backends.cudnn.flags(enabled=False)
    return contextlib.nullcontext()


def gradient_rms(model, train_ids, cfg: DynamicConfig, device="cpu") -> List[Tensor]:
    """Per weight, the root mean square of its gradient over windows of the training text (eval mode, the
    state carried, `cfg.stat_batch` streams of `cfg.bptt` tokens)."""
    model.eval()
    ids = np.asarray(train_ids if cfg.stat_tokens is None else train_ids[:cfg.stat_tokens + 1])
    if len(ids) < 2:
        raise UserInputError("dynamic evaluation needs training text for its gradient statistics")
    batcher = StreamBatcher(ids, min(cfg.stat_batch, len(ids) - 1), cfg.bptt)
    params = [p for p in model.parameters() if p.requires_grad]
    ms = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    state = model.init_state(batcher.batch_size, device)
    with _grad_context(device), torch.enable_grad():
        for k in range(len(batcher)):
            x, y = (t.to(device) for t in batcher.window(k))
            logits, state = model(x, state)
            grads = torch.autograd.grad(F.cross_entropy(logits.float().flatten(0, 1), y.flatten()), params)
            for m, g in zip(ms, grads):
                m.addcmul_(g, g)
            state = tuple(s.detach() for s in state)
    return [(m / len(batcher)).sqrt_() for m in ms]


def dynamic_loss(model, ids, rms: List[Tensor], cfg: DynamicConfig, device="cpu") -> Tuple[float, int]:
    """Total nats and targets over `ids` read as one stream, each segment scored before the update that
    learns from it. The model's weights are as they were when this returns."""
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    theta0 = [p.detach().clone() for p in params]
    mean_rms = sum(float(r.mean()) for r in rms) / len(rms)
    # theta <- (1 - d) theta + d theta_0 - inv * grad, with d = lambda * decrate and inv = eta / (RMS + eps),
    # in the weights' own dtype
    dec = [(cfg.lam * r / mean_rms).clamp_(max=1.0) if mean_rms > 0 else torch.zeros_like(r) for r in rms]
    keep = [(1 - d).to(p.dtype) for d, p in zip(dec, params)]
    pull = [(d * t).to(p.dtype) for d, t, p in zip(dec, theta0, params)]
    inv = [(cfg.lr / (r + cfg.eps)).to(p.dtype) for r, p in zip(rms, params)]
    ids = torch.from_numpy(np.asarray(ids, dtype=np.int64))
    state, count = model.init_state(1, device), 0
    total = torch.zeros((), dtype=torch.float64, device=device)  # summed on the device: no wait per segment
    try:
        with _grad_context(device), torch.enable_grad():
            for s in range(0, len(ids) - 1, cfg.bptt):
                x = ids[s:min(s + cfg.bptt, len(ids) - 1)].to(device)[None]
                y = ids[s + 1:s + 1 + x.shape[1]].to(device)
                logits, state = model(x, state)
                loss = F.cross_entropy(logits[0].float(), y, reduction="sum")
                total += loss.detach()
                count += y.numel()
                grads = torch.autograd.grad(loss / y.numel(), params)
                with torch.no_grad():
                    for p, k, q, i, g in zip(params, keep, pull, inv, grads):
                        torch.addcmul(q, p, k, out=p)
                        p.addcmul_(i, g, value=-1.0)
                state = tuple(t.detach() for t in state)
    finally:
        with torch.no_grad():
            for p, t in zip(params, theta0):
                p.copy_(t)
    return float(total), count


def tune(model, ids, rms: List[Tensor], cfg: DynamicConfig, device="cpu", lrs: Optional[Iterable[float]] = None,
         lams: Optional[Iterable[float]] = None, tokens: int = TUNE_TOKENS) -> Tuple[DynamicConfig, float]:
    """The (lr, lambda) of a grid with the lowest loss on the first `tokens` of `ids` (meant for the
    validation split), and that loss; the default grid scales with the segment length."""
    ids, scale = ids[:tokens + 1], cfg.bptt / 5
    best: Optional[Tuple[DynamicConfig, float]] = None
    for lam in lams if lams is not None else [v * scale for v in LAMBDAS_PER_5]:
        for lr in lrs if lrs is not None else [v * scale for v in LRS_PER_5]:
            c = replace(cfg, lr=lr, lam=min(lam, 1.0))
            total, count = dynamic_loss(model, ids, rms, c, device)
            if best is None or total / count < best[1]:
                best = (c, total / count)
    assert best is not None
    return best


def report(model, ids, train_ids, cfg: DynamicConfig, device="cpu", tune_ids=None) -> Dict:
    """Dynamic evaluation's figures on `ids`: the gradient RMS from `train_ids`, then (with `tune_ids`, the
    validation split) lr and lambda chosen on its first TUNE_TOKENS tokens ("optimistic" when that is `ids`
    itself)."""
    rms = gradient_rms(model, train_ids, cfg, device)
    tuned = {}
    if tune_ids is not None:
        cfg, loss = tune(model, tune_ids, rms, cfg, device)
        tuned = {"tuned_on": f"valid, first {TUNE_TOKENS} tokens", "tuning_perplexity": math.exp(min(loss, 50.0)),
                 "optimistic": tune_ids is ids}
    total, count = dynamic_loss(model, ids, rms, cfg, device)
    return {"lr": cfg.lr, "lambda": cfg.lam, "bptt": cfg.bptt, "loss": total / count,
            "perplexity": math.exp(min(total / count, 50.0)), **tuned}
