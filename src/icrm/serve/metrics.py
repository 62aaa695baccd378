"""What ``GET /metrics`` reports: request, error, item and batch-size counts since start, and recent latencies."""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from typing import Any

LATENCY_WINDOW = 10_000  # requests kept for the latency percentiles


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in [0, 100]) of sorted ``values``."""
    if not values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(values)))
    return values[rank - 1]


class Metrics:
    """Counts since start: requests, errors, items, batches and their sizes, recent latencies."""

    def __init__(self):
        self.started = time.monotonic()
        self.requests: Counter[str] = Counter()
        self.errors: Counter[int] = Counter()
        self.items = 0
        self.batch_sizes: Counter[int] = Counter()
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)

    def record_request(self, endpoint: str, items: int, seconds: float) -> None:
        self.requests[endpoint] += 1
        self.items += items
        self.latencies.append(seconds)

    def snapshot(self, queue_depth: int) -> dict[str, Any]:
        batches = sum(self.batch_sizes.values())
        batched = sum(size * count for size, count in self.batch_sizes.items())
        latencies = sorted(self.latencies)
        ms = {f"p{q}": round(percentile(latencies, q) * 1000, 3) for q in (50, 90, 99)} if latencies else {}
        if latencies:
            ms["mean"] = round(sum(latencies) / len(latencies) * 1000, 3)
        return {
            "uptime_s": round(time.monotonic() - self.started, 3),
            "requests": dict(self.requests),
            "errors": {str(status): count for status, count in sorted(self.errors.items())},
            "items": self.items,
            "batches": batches,
            "batch_size": {
                "mean": batched / batches if batches else 0.0,
                "max": max(self.batch_sizes, default=0),
                "histogram": {str(size): self.batch_sizes[size] for size in sorted(self.batch_sizes)},
            },
            "latency_ms": {**ms, "requests": len(latencies)},
            "queue_depth": queue_depth,
        }
