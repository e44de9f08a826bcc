"""Plain-number metric series behind custom Prometheus collectors.

Importing Feast switches prometheus_client into its multiprocess mode (it sets
PROMETHEUS_MULTIPROC_DIR), where every metric object of one name in one process shares its value;
components that may run twice in one process (daemons, API apps in tests) keep their own numbers here.
"""

from __future__ import annotations

import threading

from prometheus_client.core import HistogramMetricFamily


class Series:
    """One number per label value (a counter or a gauge)."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}
        self._lock = threading.Lock()

    def inc(self, label: str = "", amount: float = 1) -> None:
        with self._lock:
            self.values[label] = self.values.get(label, 0) + amount

    def set(self, label: str, value: float) -> None:
        with self._lock:
            self.values[label] = value

    def value(self, label: str = "") -> float:
        return self.values.get(label, 0)


class Histogram:
    """Cumulative buckets, sum and count per label value."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.bounds = buckets
        self.series: dict[str, tuple[list[int], list[float]]] = {}
        self._lock = threading.Lock()

    def observe(self, value: float, label: str = "") -> None:
        with self._lock:
            counts, total = self.series.setdefault(label, ([0] * (len(self.bounds) + 1), [0.0]))
            counts[next((i for i, b in enumerate(self.bounds) if value <= b), len(self.bounds))] += 1
            total[0] += value

    def sum(self, label: str = "") -> float:
        return self.series.get(label, ([], [0.0]))[1][0]

    def family(self, name: str, doc: str, label_name: str | None = None) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, doc, labels=[label_name] if label_name else None)
        for label, (counts, total) in sorted(self.series.items()):
            running, buckets = 0, []
            for bound, n in zip([*map(str, self.bounds), "+Inf"], counts):
                running += n
                buckets.append((bound, running))
            family.add_metric([label] if label_name else [], buckets, total[0])
        return family
