"""Prometheus metrics, one registry per process (the default one)."""

from prometheus_client import Counter, Gauge, Histogram

HTTP_LATENCY = Histogram(
    "gpucloud_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route", "status"],
)
COMMANDS = Counter("gpucloud_commands_total", "Commands handled", ["command", "outcome"])
RELAY_PUBLISHED = Counter(
    "gpucloud_relay_published_total", "Events published by the relay", ["context"]
)
RELAY_LAG = Gauge("gpucloud_relay_lag_events", "Stored events not yet published", ["context"])
RELAY_ERRORS = Counter("gpucloud_relay_errors_total", "Relay publish failures", ["context"])
RELAY_QUARANTINED = Counter(
    "gpucloud_relay_quarantined_total",
    "Stored events the relay could not turn into a message, quarantined "
    "(alert: `gpucloud relay quarantine`)",
    ["context"],
)
PROJECTION_APPLIED = Counter(
    "gpucloud_projection_applied_total", "Events applied to read models", ["projection"]
)
PROJECTION_SKIPPED = Counter(
    "gpucloud_projection_skipped_total",
    "Redelivered events skipped by their (subject, sequence) mark",
    ["projection"],
)
PROJECTION_LAG = Gauge(
    "gpucloud_projection_lag_messages",
    "Messages on the topic not yet applied",
    ["projection", "topic", "partition"],
)
PROJECTION_QUARANTINED = Counter(
    "gpucloud_projection_quarantined_total",
    "Events a projection could not apply, quarantined (alert: `gpucloud projections quarantine`)",
    ["projection"],
)
CONSUMER_ERRORS = Counter(
    "gpucloud_consumer_errors_total", "Messages a consumer failed to handle", ["consumer"]
)
SAGA_STEPS = Counter(
    "gpucloud_saga_steps_total", "Provisioning saga steps, by the state stepped from", ["outcome"]
)
RELEASE_FAILURES = Counter(
    "gpucloud_release_failures_total",
    "Releases a node did not confirm (alert when it keeps rising: GPUs may still be in use)",
)
WINDOWS_BILLED = Counter("gpucloud_billing_windows_total", "Usage windows billed")
BILLED_MICRO = Counter("gpucloud_billing_debited_micro_total", "Micro-dollars debited for usage")
FORCED_RELEASES = Counter(
    "gpucloud_forced_releases_total", "Allocations released because the credit ran out"
)
ORPHAN_INSTANCES = Gauge(
    "gpucloud_orphan_instances", "Instances on nodes with no live allocation (last reconcile)"
)
LOST_INSTANCES = Gauge(
    "gpucloud_lost_instances", "Running allocations whose instance vanished (last reconcile)"
)
STRIPE_EVENTS = Counter(
    "gpucloud_stripe_events_total",
    "Verified Stripe events the payments process manager finished, by outcome",
    ["outcome"],
)
STRIPE_IGNORED = Counter(
    "gpucloud_stripe_events_ignored_total",
    "Verified Stripe events ignored: livemode mismatch, unknown type, no payment of ours, ...",
    ["reason"],
)
STRIPE_WEBHOOKS = Counter(
    "gpucloud_stripe_webhooks_total",
    "Stripe webhook deliveries, by answer (stored, duplicate, refused)",
    ["answer"],
)
