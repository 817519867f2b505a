"""Sample-quality numbers for generated text: diversity (distinct-n) and repetition.

distinct-n (Li et al. 2016) is the number of distinct word n-grams over the number of word n-grams in all
samples together: low values are the dull, repetitive output LSTM generators are known for. rep-n is the
share of each sample's word n-grams that already occurred earlier in the same sample (its loops).
Words are whitespace-separated, so the figures compare across character, word and BPE models.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple


def _ngrams(words: Sequence[str], n: int) -> List[Tuple[str, ...]]:
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def distinct_n(samples: Sequence[str], n: int) -> float:
    """Distinct word n-grams / all word n-grams, over every sample (0 when there are none)."""
    grams = [g for s in samples for g in _ngrams(s.split(), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repeat_rate(samples: Sequence[str], n: int = 4) -> float:
    """Mean over samples of the share of word n-grams that repeat an earlier one in the same sample."""
    rates = []
    for s in samples:
        grams = _ngrams(s.split(), n)
        if grams:
            rates.append(1 - len(set(grams)) / len(grams))
    return sum(rates) / len(rates) if rates else 0.0


def sample_quality(samples: Sequence[str]) -> Dict[str, float]:
    """distinct-1/2/3 and rep-4 of a set of samples."""
    out = {f"distinct_{n}": distinct_n(samples, n) for n in (1, 2, 3)}
    out["repeat_4gram_rate"] = repeat_rate(samples, 4)
    out["samples"] = len(samples)
    return out
