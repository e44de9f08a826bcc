"""The consumer daemon's Prometheus metrics and its /healthz + /metrics endpoint."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from segue.metric_series import Histogram, Series

FRESHNESS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60, 300, 3600)
BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class StreamMetrics(Collector):
    """Counters a dashboard rates (events/s = rate(segue_stream_events_total[1m])), the lag, and
    freshness: seconds from an event's time until its track was written where searches read.

    Kept as plain numbers behind a collector: importing Feast switches prometheus_client into its
    multiprocess mode (it sets PROMETHEUS_MULTIPROC_DIR), where every metric object of one name in
    one process shares its value, so two daemons in one process would count each other's events.
    """

    def __init__(self) -> None:
        self.events = Series()  # by outcome: indexed, edited, superseded, dead_letter
        self.batches = Series()
        self.failures = Series()  # by stage: write, commit
        self.lag = Series()  # by partition, "<topic>/<partition>"
        self.events_per_s = Series()
        self.freshness = Histogram(FRESHNESS_BUCKETS)
        self.batch_seconds = Histogram(BATCH_BUCKETS)
        self.stage_seconds = Histogram(BATCH_BUCKETS)  # by stage
        self.registry = CollectorRegistry()
        self.registry.register(self)
        self._window: list[tuple[float, int]] = []

    def committed(self, events: int, now: float) -> None:
        self.batches.inc()
        self._window = [(t, n) for t, n in self._window if now - t < 10] + [(now, events)]
        span = max(now - self._window[0][0], 1.0)
        self.events_per_s.set("", sum(n for _, n in self._window) / span)

    def total(self, outcome: str) -> int:
        return int(self.events.value(outcome))

    def collect(self):
        events = CounterMetricFamily("segue_stream_events", "Events by outcome: indexed (tracks), edited "
                                     "(playlist edits applied), superseded (older than the stored track or "
                                     "playlist), dead_letter", labels=["outcome"])
        for outcome, n in sorted(self.events.values.items()):
            events.add_metric([outcome], n)
        yield events
        yield CounterMetricFamily("segue_stream_batches", "Micro-batches committed", value=self.batches.value())
        failures = CounterMetricFamily("segue_stream_write_failures", "Failed attempts, retried with back-off",
                                       labels=["stage"])
        for stage, n in sorted(self.failures.values.items()):
            failures.add_metric([stage], n)
        yield failures
        lag = GaugeMetricFamily("segue_stream_consumer_lag", "Messages behind the partition ends, by "
                                "\"<topic>/<partition>\"",
                                labels=["partition"])
        for partition, n in sorted(self.lag.values.items()):
            lag.add_metric([partition], n)
        yield lag
        yield GaugeMetricFamily("segue_stream_events_per_second", "Events per second over the last committed "
                                "batches", value=self.events_per_s.value())
        yield self.freshness.family("segue_stream_freshness_seconds", "Event time to searchable")
        yield self.batch_seconds.family("segue_stream_batch_seconds", "Poll-to-commit time of a batch")
        yield self.stage_seconds.family("segue_stream_stage_seconds", "Time of each write stage per batch: "
                                        "read_stored, feast_push, offline_record, embed_and_upsert (tracks), playlist_* (edits)", "stage")


class DaemonHealth:
    """What /healthz reports: alive while the loop turns; 503 while writes keep failing."""

    def __init__(self, stall_after_s: float = 120):
        self.stall_after_s = stall_after_s
        self.last_loop = time.monotonic()
        self.failing_since: float | None = None
        self.last_error = ""
        self._lock = threading.Lock()

    def beat(self) -> None:
        with self._lock:
            self.last_loop = time.monotonic()

    def failing(self, error: str) -> None:
        with self._lock:
            self.failing_since = self.failing_since or time.monotonic()
            self.last_error = error[:500]

    def recovered(self) -> None:
        with self._lock:
            self.failing_since, self.last_error = None, ""

    def report(self) -> tuple[int, dict]:
        with self._lock:
            now = time.monotonic()
            stalled = now - self.last_loop > self.stall_after_s
            status = "stalled" if stalled else "retrying" if self.failing_since else "ok"
            body = {"status": status, "seconds_since_loop": round(now - self.last_loop, 1)}
            if self.failing_since:
                body |= {"failing_for_s": round(now - self.failing_since, 1), "last_error": self.last_error}
        return (200 if status == "ok" else 503), body


def serve_health(metrics: StreamMetrics, health: DaemonHealth, port: int,
                 host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Serves /healthz and /metrics on `host`:`port` (0: a free port) from a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the http.server API)
            if self.path == "/metrics":
                code, body, kind = 200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST
            elif self.path == "/healthz":
                code, doc = health.report()
                body, kind = json.dumps(doc).encode(), "application/json"
            else:
                code, body, kind = 404, b'{"error": "try /healthz or /metrics"}', "application/json"
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # scrapes every few seconds would flood the daemon's log
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="segue-health", daemon=True).start()
    return server
