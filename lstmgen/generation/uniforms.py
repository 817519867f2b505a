"""Each row's random numbers as a function of (the row's key, how many it has drawn).

A counter-based generator (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3"): the n-th
uniform of a row is a hash of its 64-bit key and n, here SplitMix64's finaliser (Steele et al. 2014).
So a row's numbers do not depend on what else is decoded, and the K numbers a block of K steps needs for
B rows come from one vectorised call instead of K x B calls into per-row generators, which at batch 1024
cost more host time than the GPU's work.
"""
from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def uniforms(keys: np.ndarray, counts: np.ndarray, steps: int) -> np.ndarray:
    """Uniforms in [0, 1): out[j, b] is row b's draw number counts[b] + j.

    Args:
        keys: (B,) uint64, one key per row.
        counts: (B,) how many numbers each row has drawn before.
        steps: how many per row.

    Returns:
        (steps, B) float64.
    """
    n = counts.astype(np.uint64)[None, :] + np.arange(steps, dtype=np.uint64)[:, None]
    z = keys.astype(np.uint64)[None, :] + (n + np.uint64(1)) * _GOLDEN  # uint64 arithmetic wraps mod 2**64
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))  # the top 53 bits: exact doubles
