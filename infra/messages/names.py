"""The name of every message on Kafka, spelled once: its topic and its CloudEvents type.

Plain strings and nothing else (no imports), so the projections may subscribe by them: the
import contract lets ``projections`` import this one module of ``infra``. The wire tables of
this package publish under these names; tests/contract/test_message_types.py fails when a
domain event has no wire model, a projection handles a type nobody publishes, or a published
type reaches no consumer.
"""

TENANT_TOPIC = "identity.tenant.v1"
TENANT_CREATED = "cloud.gpu.tenant.created.v1"

USER_TOPIC = "identity.user.v1"
USER_CREATED = "cloud.gpu.user.created.v1"

APIKEY_TOPIC = "identity.apikey.v1"
APIKEY_CREATED = "cloud.gpu.apikey.created.v1"
APIKEY_REVOKED = "cloud.gpu.apikey.revoked.v1"

SKU_TOPIC = "inventory.sku.v1"
SKU_CREATED = "cloud.gpu.sku.created.v1"
SKU_PRICE_CHANGED = "cloud.gpu.sku.price_changed.v1"
SKU_ACTIVATED = "cloud.gpu.sku.activated.v1"
SKU_DEACTIVATED = "cloud.gpu.sku.deactivated.v1"

NODE_TOPIC = "inventory.node.v1"
NODE_REGISTERED = "cloud.gpu.node.registered.v1"
NODE_STATE_CHANGED = "cloud.gpu.node.state_changed.v1"
NODE_CAPACITY_CLAIMED = "cloud.gpu.node.capacity_claimed.v1"
NODE_CLAIM_RELEASED = "cloud.gpu.node.claim_released.v1"

ALLOCATION_TOPIC = "compute.allocation.v1"
ALLOCATION_REQUESTED = "cloud.gpu.allocation.requested.v1"
ALLOCATION_RESERVED = "cloud.gpu.allocation.reserved.v1"
ALLOCATION_PROVISIONING_STARTED = "cloud.gpu.allocation.provisioning_started.v1"
ALLOCATION_RUNNING = "cloud.gpu.allocation.running.v1"
ALLOCATION_FAILED = "cloud.gpu.allocation.failed.v1"
ALLOCATION_RELEASE_REQUESTED = "cloud.gpu.allocation.release_requested.v1"
ALLOCATION_RELEASED = "cloud.gpu.allocation.released.v1"
ALLOCATION_RELEASE_FAILED = "cloud.gpu.allocation.release_failed.v1"
ALLOCATION_WINDOW_BILLED = "cloud.gpu.allocation.window_billed.v1"
ALLOCATION_SETTLED = "cloud.gpu.allocation.settled.v1"

QUOTA_TOPIC = "compute.quota.v1"
QUOTA_OPENED = "cloud.gpu.quota.opened.v1"
QUOTA_RESERVED = "cloud.gpu.quota.reserved.v1"
QUOTA_FREED = "cloud.gpu.quota.freed.v1"
QUOTA_LIMIT_SET = "cloud.gpu.quota.limit_set.v1"

LEDGER_TOPIC = "ledger.ledger.v1"
LEDGER_OPENED = "cloud.gpu.ledger.opened.v1"
LEDGER_CREDITED = "cloud.gpu.ledger.credited.v1"
LEDGER_DEBITED = "cloud.gpu.ledger.debited.v1"
LEDGER_REFUNDED = "cloud.gpu.ledger.refunded.v1"
LEDGER_ADJUSTED = "cloud.gpu.ledger.adjusted.v1"
LEDGER_CLAWED_BACK = "cloud.gpu.ledger.clawed_back.v1"
LEDGER_HOLD_PLACED = "cloud.gpu.ledger.hold_placed.v1"
LEDGER_HOLD_CAPTURED = "cloud.gpu.ledger.hold_captured.v1"
LEDGER_HOLD_VOIDED = "cloud.gpu.ledger.hold_voided.v1"
LEDGER_HOLD_EXPIRED = "cloud.gpu.ledger.hold_expired.v1"
LEDGER_DEBIT_SHORTFALL = "cloud.gpu.ledger.debit_shortfall.v1"
LEDGER_POSTING_REJECTED = "cloud.gpu.ledger.posting_rejected.v1"
LEDGER_BALANCE_DEPLETED = "cloud.gpu.ledger.balance_depleted.v1"
LEDGER_BALANCE_RESTORED = "cloud.gpu.ledger.balance_restored.v1"

RELAY_UNROUTED_TOPIC = "relay.unrouted.v1"
"""No event is published here: the dead letters (``.dlq``) of stored events the relay could
not even route (their aggregate has no wire entry at all) go to its dead-letter twin."""

PAYMENT_TOPIC = "billing.payment.v1"
PAYMENT_OPENED = "cloud.gpu.payment.opened.v1"
PAYMENT_SESSION_CREATED = "cloud.gpu.payment.session_created.v1"
PAYMENT_CHANGED = "cloud.gpu.payment.changed.v1"
PAYMENT_INTENT_LINKED = "cloud.gpu.payment.intent_linked.v1"
