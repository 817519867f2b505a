"""Averaged SGD (Polyak & Juditsky 1992) and AWD-LSTM's non-monotone trigger for it (NT-ASGD: Merity et al.
2017, section 3).

SGD's last iterate jitters around a minimum; the mean of the iterates since some point sits closer to it.
NT-ASGD starts that mean once the validation loss stops improving, so early, fast-moving weights stay out.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
from torch import nn


def stalled(history: List[float], loss: float, nonmono: int) -> bool:
    """NT-ASGD's trigger: `loss` is worse than the best of the validations before the last `nonmono` ones."""
    return len(history) > nonmono and loss > min(history[:-nonmono])


class WeightAverage:
    """The running mean of a model's parameters since averaging began.

    Args:
        model: the model whose parameters are averaged.
        mean: a mean to continue (from a checkpoint), by parameter name; default the current weights.
        count: how many iterates `mean` holds.
    """

    def __init__(self, model: nn.Module, mean: Optional[Dict[str, torch.Tensor]] = None, count: int = 1) -> None:
        self.model = model
        self.mean = mean if mean is not None else {n: p.detach().clone() for n, p in model.named_parameters()}
        self.count = count

    @torch.no_grad()
    def fold(self) -> None:
        """Fold the current weights into the mean: m += (w - m) / n."""
        self.count += 1
        for n, p in self.model.named_parameters():
            self.mean[n].add_(p.detach() - self.mean[n], alpha=1.0 / self.count)

    @torch.no_grad()
    def swap(self) -> None:
        """Exchange the model's weights and the mean (twice restores both): evaluation and the final weights
        use the mean, training goes on from the last iterate."""
        for n, p in self.model.named_parameters():
            tmp = p.detach().clone()
            p.copy_(self.mean[n])
            self.mean[n].copy_(tmp)
