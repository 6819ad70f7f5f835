"""Identity context: command handlers for tenants (users and API keys: the identity issue)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError

from domain.errors import IdempotencyKeyReusedError, NotFoundError
from domain.tenant import Tenant

KEY_NAMESPACE = uuid5(NAMESPACE_URL, "https://gpucloud.dev/idempotency")


def request_hash(**fields: object) -> str:
    """A stable digest of a command's input, compared when an idempotency key comes back."""
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def id_for_key(kind: str, key: str | None) -> UUID:
    """The aggregate id a client key maps to: the same key always names the same aggregate."""
    return uuid5(KEY_NAMESPACE, f"{kind}:{key}") if key else uuid4()


@dataclass(frozen=True)
class Written:
    """What a command wrote: the aggregate and the version the read side must reach."""

    id: UUID
    version: int
    created: bool


class Tenants(Application[UUID]):
    """The identity context's application: one notification log, relayed to identity.* topics."""

    name = "identity"

    def create(self, name: str, idempotency_key: str | None = None) -> Written:
        tenant_id = id_for_key("tenant", idempotency_key)
        digest = request_hash(name=name.strip())
        existing = self._find(tenant_id)
        if existing is not None:
            return self._replayed(existing, digest)
        tenant = Tenant.register(tenant_id, name, digest)
        try:
            self.save(tenant)
        except IntegrityError:
            return self._replayed(self.repository.get(tenant_id), digest)
        return Written(tenant.id, tenant.version, created=True)

    def get(self, tenant_id: UUID) -> Tenant:
        found = self._find(tenant_id)
        if found is None:
            raise NotFoundError(f"tenant {tenant_id} not found")
        return found

    def _find(self, tenant_id: UUID) -> Tenant | None:
        try:
            return self.repository.get(tenant_id)
        except AggregateNotFoundError:
            return None

    @staticmethod
    def _replayed(tenant: Tenant, digest: str) -> Written:
        if tenant.request_hash != digest:
            raise IdempotencyKeyReusedError("Idempotency-Key was used with a different request")
        return Written(tenant.id, tenant.version, created=False)
