"""Settings, read once from the environment (prefix-free names operators already know)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True)

    database_url: str | None = Field(default=None, alias="DATABASE_URL")
    kafka_bootstrap_servers: str | None = Field(default=None, alias="KAFKA_BOOTSTRAP_SERVERS")
    data_dir: Path = Field(default=Path(".gpucloud"), alias="GPUCLOUD_DATA_DIR")
    db_schema: str = Field(default="public", alias="GPUCLOUD_DB_SCHEMA")
    broker_epoch: str = Field(default="kafka", alias="GPUCLOUD_BROKER_EPOCH")
    kafka_partitions: int = Field(default=3, alias="GPUCLOUD_KAFKA_PARTITIONS")
    kafka_idempotent_producer: bool = Field(default=False, alias="GPUCLOUD_KAFKA_IDEMPOTENCE")
    api_host: str = Field(default="127.0.0.1", alias="GPUCLOUD_API_HOST")
    api_port: int = Field(default=8000, alias="GPUCLOUD_API_PORT")
    read_wait_seconds: float = Field(default=2.0, alias="GPUCLOUD_READ_WAIT_SECONDS")
    max_body_bytes: int = Field(default=64 * 1024, alias="GPUCLOUD_MAX_BODY_BYTES")
    otlp_endpoint: str | None = Field(default=None, alias="OTEL_EXPORTER_OTLP_ENDPOINT")
    relay_batch: int = Field(default=500, alias="GPUCLOUD_RELAY_BATCH")
    relay_poll_seconds: float = Field(default=0.05, alias="GPUCLOUD_RELAY_POLL_SECONDS")
    fault: str | None = Field(default=None, alias="GPUCLOUD_FAULT")
    log_level: str = Field(default="INFO", alias="GPUCLOUD_LOG_LEVEL")
    command_timeout: float = Field(default=4.0, alias="GPUCLOUD_COMMAND_TIMEOUT")
    pg_connect_timeout: int = Field(default=2, alias="GPUCLOUD_PG_CONNECT_TIMEOUT")
    rate_limit_per_second: float = Field(default=20.0, alias="GPUCLOUD_RATE_LIMIT_PER_SECOND")
    rate_limit_burst: int = Field(default=100, alias="GPUCLOUD_RATE_LIMIT_BURST")
    auth_failures_per_second: float = Field(default=1.0, alias="GPUCLOUD_AUTH_FAILURES_PER_SECOND")
    auth_failure_burst: int = Field(default=20, alias="GPUCLOUD_AUTH_FAILURE_BURST")
    rate_limit_cleanup_seconds: float = Field(
        default=60.0, alias="GPUCLOUD_RATE_LIMIT_CLEANUP_SECONDS"
    )
    worker_interval_seconds: float = Field(default=5.0, alias="GPUCLOUD_WORKER_INTERVAL_SECONDS")
    metrics_port: int | None = Field(default=None, alias="GPUCLOUD_METRICS_PORT")
    # Allocations: admission, the provisioning saga, node drivers, billing.
    tenant_gpu_quota: int = Field(default=16, alias="GPUCLOUD_TENANT_GPU_QUOTA")
    runway_minutes: int = Field(default=10, alias="GPUCLOUD_RUNWAY_MINUTES")
    saga_poll_seconds: float = Field(default=0.2, alias="GPUCLOUD_SAGA_POLL_SECONDS")
    driver_timeout_seconds: float = Field(default=30.0, alias="GPUCLOUD_DRIVER_TIMEOUT")
    billing_batch: int = Field(default=200, alias="GPUCLOUD_BILLING_BATCH")
    reconcile_seconds: float = Field(default=30.0, alias="GPUCLOUD_RECONCILE_SECONDS")
    instance_command: str | None = Field(default=None, alias="GPUCLOUD_INSTANCE_COMMAND")
    ssh_username: str = Field(default="gpucloud", alias="GPUCLOUD_SSH_USER")
    ssh_key_path: Path | None = Field(default=None, alias="GPUCLOUD_SSH_KEY")
    ssh_known_hosts: Path | None = Field(default=None, alias="GPUCLOUD_SSH_KNOWN_HOSTS")

    # Payments: Stripe Checkout top-ups and webhooks (no secret key: `up` runs the stand-in).
    stripe_secret_key: str | None = Field(default=None, alias="GPUCLOUD_STRIPE_SECRET_KEY")
    stripe_api_base: str = Field(default="https://api.stripe.com", alias="GPUCLOUD_STRIPE_API_BASE")
    stripe_webhook_secrets: str = Field(default="", alias="GPUCLOUD_STRIPE_WEBHOOK_SECRETS")
    stripe_livemode: bool = Field(default=False, alias="GPUCLOUD_STRIPE_LIVEMODE")
    stripe_timeout: float = Field(default=3.0, alias="GPUCLOUD_STRIPE_TIMEOUT")
    public_url: str = Field(default="http://127.0.0.1:8000", alias="GPUCLOUD_PUBLIC_URL")
    topup_min: int = Field(default=5_000_000, alias="GPUCLOUD_TOPUP_MIN")  # $5 in micro-dollars
    topup_max: int = Field(default=10_000_000_000, alias="GPUCLOUD_TOPUP_MAX")  # $10,000
    payments_poll_seconds: float = Field(default=0.1, alias="GPUCLOUD_PAYMENTS_POLL_SECONDS")

    @property
    def webhook_secrets(self) -> list[str]:
        """Every secret a webhook may be signed with (more than one while rotating)."""
        return [s.strip() for s in self.stripe_webhook_secrets.split(",") if s.strip()]

    def with_(self, **changes: object) -> Settings:
        return self.model_copy(update=changes)
