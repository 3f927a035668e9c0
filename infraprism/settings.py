"""The one place configuration is read. Every address and secret comes from here."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """All of InfraPrism's configuration, read from `INFRAPRISM_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="INFRAPRISM_", extra="ignore")

    # Where things live.
    kafka_bootstrap: str = "127.0.0.1:9092"
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    key_prefix: str = Field(
        default="ip",
        pattern=r"^[A-Za-z0-9._-]{1,32}$",
        description="first part of every Redis key; keys read PREFIX:v2:...",
    )

    # Topics.
    events_topic: str = "llm-cost-events"
    dlq_topic: str = "llm-cost-events.dlq"
    deltas_topic: str = "llm-cost-deltas"
    anomalies_topic: str = "llm-cost-anomalies"
    topic_partitions: int = Field(default=4, ge=1, le=1024)

    # The aggregation worker.
    aggregator_group: str = "infraprism-aggregator"
    batch_max_events: int = Field(default=20_000, ge=1, le=200_000)
    batch_max_wait_ms: int = Field(default=50, ge=0, le=10_000)
    dedupe_window_days: float = Field(
        default=7,
        gt=0,
        le=3650,
        description="a repeated event_id is counted once when its Kafka record time is this close "
        "to the counted copy's (days; a fraction for tests)",
    )
    retention_hour_days: int | None = Field(default=None, ge=1)
    retention_day_days: int | None = Field(default=None, ge=1)
    retention_month_days: int | None = Field(default=None, ge=1)
    metrics_port: int | None = Field(default=None, ge=0, le=65535)

    # The API.
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    api_workers: int = Field(default=1, ge=1, le=64, description="uvicorn worker processes of `infraprism api`")
    api_redis_max_connections: int = Field(default=64, ge=1, le=10_000)
    # Per key (docs/api.md, "Limits"): a dashboard's page makes about ten requests, and a
    # script reading a year day by day a few hundred; a flood of one key must not slow the others.
    api_rate_limit_per_second: float = Field(
        default=20.0, ge=0, le=1_000_000, description="requests a key may make per second; 0: no limit"
    )
    api_rate_limit_burst: int = Field(default=100, ge=1, le=10_000_000, description="requests a key may save up")

    # The anomaly detector and its alerts.
    detector_group: str = "infraprism-detector"
    budget_watcher_group: str = Field(
        default="infraprism-budgets", description="consumer group of `infraprism budget-watcher` on the deltas topic"
    )
    alert_webhook_url: str | None = None
    alert_webhook_secret: SecretStr | None = None
    alert_webhook_allow_unsigned: bool = Field(
        default=False, description="true: a webhook without a secret starts, its deliveries unsigned"
    )
    # Detector thresholds (docs/anomalies.md explains each).
    detector_baseline_days: int = Field(default=7, ge=1, le=60, description="days of history in a baseline")
    detector_min_history_days: int = Field(
        default=3, ge=1, le=60, description="a subject is judged after this many days of history"
    )
    detector_min_relative_change: float = Field(
        default=1.0, gt=0, description="a window must exceed (1 + this) x its baseline median"
    )
    detector_robust_z: float = Field(default=5.0, gt=0, description="and its median + this x robust sigma (1.4826 MAD)")
    detector_min_impact_usd: float = Field(
        default=5.0, ge=0, description="and its median by this many USD (cost spikes)"
    )
    detector_min_excess_events: int = Field(
        default=100, ge=0, description="and its median by this many events (volume spikes)"
    )
    detector_min_latency_increase_ms: float = Field(
        default=1000.0, ge=0, description="and its median by this many ms (latency spikes)"
    )
    detector_min_latency_samples: int = Field(
        default=20, ge=1, description="latencies an hour needs before its mean is judged"
    )
    detector_recovery_minutes: int = Field(
        default=180, ge=1, description="an anomaly resolves after this long without being anomalous"
    )
    alert_poll_seconds: float = Field(default=0.5, gt=0, le=60, description="how often the alert outbox is drained")
    alert_retry_max_seconds: float = Field(
        default=60.0, gt=0, description="the longest backoff between delivery retries"
    )

    def redis_dsn(self) -> str:
        return self.redis_url.get_secret_value()
