"""Prometheus metrics of the aggregation worker, on a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class AggregatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_applied = Counter("infraprism_events_applied", "Events counted into the aggregates", registry=r)
        self.events_dead_lettered = Counter(
            "infraprism_events_dead_lettered", "Messages sent to the dead-letter topic", ["reason_kind"], registry=r
        )
        self.events_duplicate = Counter(
            "infraprism_events_duplicate", "Events skipped because their event_id was already counted", registry=r
        )
        self.batches_fenced = Counter(
            "infraprism_batches_fenced",
            "Batches refused because their offsets did not follow the stored ones",
            registry=r,
        )
        self.batches_refused = Counter(
            "infraprism_batches_refused",
            "Batches of one partition Redis refused before writing anything; that partition halts",
            registry=r,
        )
        self.retries = Counter(
            "infraprism_retries",
            "Waits with backoff for a dependency: the DLQ producer or Redis",
            ["dependency"],
            registry=r,
        )
        self.batch_size = Histogram(
            "infraprism_batch_size_events",
            "Messages per applied batch",
            buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000, 20000, 50000),
            registry=r,
        )
        self.apply_seconds = Histogram(
            "infraprism_apply_seconds",
            "Time of the atomic Redis apply call per batch",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.freshness_seconds = Histogram(
            "infraprism_freshness_seconds",
            "From a message's produce time to its batch being visible in Redis",
            buckets=(0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.75, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.consumer_lag = Gauge(
            "infraprism_consumer_lag", "Messages behind the log end, per partition", ["partition"], registry=r
        )
        self.partition_halted = Gauge(
            "infraprism_partition_halted",
            "1 when the worker stopped applying a partition (see the log)",
            ["partition"],
            registry=r,
        )

    def serve(self, port: int) -> None:
        start_http_server(port, addr="0.0.0.0", registry=self.registry)  # noqa: S104 - scraped from outside
