"""Counters, gauges and histograms in the Prometheus text format (written by hand: it is small)."""
from __future__ import annotations

import threading
from bisect import bisect_left
from collections import defaultdict
from typing import Callable, Dict, List, Tuple

Labels = Tuple[Tuple[str, str], ...]
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    esc = [(k, v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")) for k, v in labels]
    return "{" + ",".join(f'{k}="{v}"' for k, v in esc) + "}"


class Metrics:
    """The server's numbers: requests, tokens, queue depth, latencies. Thread-safe (the scheduler
    threads count tokens while the event loop counts requests)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: Dict[str, Dict[Labels, float]] = defaultdict(dict)
        self._hists: Dict[str, Dict[Labels, List[float]]] = defaultdict(dict)  # bucket counts, then sum
        self._gauges: Dict[str, Callable[[], Dict[Labels, float]]] = {}
        self._help: Dict[str, str] = {}

    def inc(self, name: str, value: float = 1.0, help: str = "", **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._help.setdefault(name, help)
            self._counters[name][key] = self._counters[name].get(key, 0.0) + value

    def observe(self, name: str, value: float, help: str = "", **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._help.setdefault(name, help)
            h = self._hists[name].setdefault(key, [0.0] * (len(LATENCY_BUCKETS) + 2))
            h[bisect_left(LATENCY_BUCKETS, value)] += 1  # the first bucket whose bound is >= value
            h[-1] += value

    def gauge(self, name: str, read: Callable[[], Dict[Labels, float]], help: str = "") -> None:
        """A value read when scraped (queue depth, active rows)."""
        self._gauges[name], self._help[name] = read, help

    def render(self) -> str:
        lines: List[str] = []
        with self._lock:
            for name, series in sorted(self._counters.items()):
                lines += [f"# HELP {name} {self._help.get(name, '')}", f"# TYPE {name} counter"]
                lines += [f"{name}{_labels(k)} {v:g}" for k, v in sorted(series.items())]
            for name, series in sorted(self._hists.items()):
                lines += [f"# HELP {name} {self._help.get(name, '')}", f"# TYPE {name} histogram"]
                for k, h in sorted(series.items()):
                    total = 0.0
                    for bound, n in zip(LATENCY_BUCKETS + (float("inf"),), h[:-1]):
                        total += n
                        le = "+Inf" if bound == float("inf") else f"{bound:g}"
                        lines.append(f"{name}_bucket{_labels(k + (('le', le),))} {total:g}")
                    lines += [f"{name}_sum{_labels(k)} {h[-1]:g}", f"{name}_count{_labels(k)} {total:g}"]
        for name, read in sorted(self._gauges.items()):
            lines += [f"# HELP {name} {self._help.get(name, '')}", f"# TYPE {name} gauge"]
            lines += [f"{name}{_labels(k)} {v:g}" for k, v in sorted(read().items())]
        return "\n".join(lines) + "\n"
