"""The API's Prometheus metrics: requests, latency, and each stage of the path on its own.

Each worker process answers /metrics with its own numbers (Prometheus scrapes every worker's
port, or a single worker per pod as on Kubernetes), kept by a custom collector for the reason
`segue.metric_series` gives.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from segue.metric_series import Histogram, Series

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5)


class ServingMetrics(Collector):
    def __init__(self) -> None:
        self.requests = Series()  # by "endpoint status"
        self.request_seconds = Histogram(LATENCY_BUCKETS)  # by endpoint
        self.stage_seconds = Histogram(LATENCY_BUCKETS)  # by stage
        self.dependency_failures = Series()  # by dependency
        self.partial = Series()
        self.target: tuple[str, str] = ("", "")  # collection, model version
        self.swaps = 0
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def collect(self):
        requests = CounterMetricFamily("segue_api_requests", "Requests by endpoint and status code",
                                       labels=["endpoint", "status"])
        for key, n in sorted(self.requests.values.items()):
            requests.add_metric(key.split(" ", 1), n)
        yield requests
        yield self.request_seconds.family("segue_api_request_seconds", "Time in the handler", "endpoint")
        yield self.stage_seconds.family("segue_api_stage_seconds", "Time of each stage of a request: "
                                        "playlist_features, seed_tracks, query_tower, search, metadata", "stage")
        failures = CounterMetricFamily("segue_api_dependency_failures", "Requests answered 503 because a "
                                       "dependency failed or timed out", labels=["dependency"])
        for dependency, n in sorted(self.dependency_failures.values.items()):
            failures.add_metric([dependency], n)
        yield failures
        yield CounterMetricFamily("segue_api_partial_responses", "Responses with fewer than k tracks",
                                  value=self.partial.value())
        info = GaugeMetricFamily("segue_api_serving_target", "The collection searched and its model version",
                                 labels=["collection", "model_version"])
        if self.target[0]:
            info.add_metric(list(self.target), 1)
        yield info
        yield CounterMetricFamily("segue_api_target_swaps", "Times the served collection changed",
                                  value=self.swaps)
