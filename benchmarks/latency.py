"""Latency percentiles of a callable, shared by the benchmarks."""

from __future__ import annotations

import time

import numpy as np


def latency_ms(fn, repeats: int, warmup: int = 10) -> dict:
    """p50/p99 in milliseconds of `repeats` calls, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return {"p50_ms": round(float(np.percentile(samples, 50)), 3),
            "p99_ms": round(float(np.percentile(samples, 99)), 3), "n": repeats}
