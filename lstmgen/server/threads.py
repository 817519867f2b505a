"""How many intra-op threads the engine's steps use, chosen by measuring them.

A team of OpenMP threads is fastest on an idle machine, but when another process holds one of the cores
the team's threads wait for a descheduled peer at every parallel region: one stream on two cores, one of
them busy, made 21 tokens/s with two threads against 444 with the machine idle. No setting is right for
both, and the load comes and goes, so the engine measures: every `period` seconds of work it runs `trial`
steps with each candidate thread count and keeps the one whose steps were fastest (a few steps out of
hundreds, so a bad candidate costs little).
"""
from __future__ import annotations

import time
from typing import Callable, Dict, List, Sequence

import torch


class ThreadTuner:
    """Chooses torch's thread count for a loop of steps, by timing them.

    Args:
        candidates: the thread counts to try (one alone: fixed, never measured).
        period: seconds of steps between two trials.
        trial: steps timed per candidate in a trial.
        set_threads: applies a count (torch.set_num_threads, on the thread that steps).
    """

    def __init__(self, candidates: Sequence[int], period: float = 5.0, trial: int = 6,
                 set_threads: Callable[[int], None] = torch.set_num_threads) -> None:
        self.candidates = sorted(set(candidates))
        self.period, self.trial, self.set_threads = period, trial, set_threads
        self.best = self.candidates[-1]
        self.times: Dict[int, List[float]] = {}
        self.queue: List[int] = []  # the candidate of each step still to time in this trial
        self.next_trial = time.monotonic() + min(period, 1.0)  # the first trial soon after the start
        self.current = self.best
        self.set_threads(self.best)

    def before_step(self) -> None:
        """Set the count the next step runs with."""
        if len(self.candidates) > 1 and not self.queue and time.monotonic() >= self.next_trial:
            # interleaved (1, n, 1, n, ...), so that a change in the load or the batch hits all alike
            self.queue = [c for _ in range(self.trial) for c in self.candidates]
            self.times = {c: [] for c in self.candidates}
        want = self.queue[0] if self.queue else self.best
        if want != self.current:
            self.set_threads(want)
            self.current = want

    def after_step(self, seconds: float) -> None:
        """The step just run took `seconds`."""
        if not self.queue:
            return
        self.times[self.queue.pop(0)].append(seconds)
        if not self.queue:  # the median: one step held up by something else must not decide
            self.best = min(self.candidates, key=lambda c: sorted(self.times[c])[len(self.times[c]) // 2])
            self.next_trial = time.monotonic() + self.period
