"""Identity context: tenants, their users, and API keys (command handlers and authentication)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID, uuid5

from eventsourcing.persistence import IntegrityError

from domain.errors import NotFoundError
from domain.identity import (
    OPS,
    OWNER,
    ApiKey,
    AuthenticationFailedError,
    KeyGrant,
    Principal,
    User,
)
from domain.tenant import Tenant
from handlers.base import (
    KEY_NAMESPACE,
    ContextApplication,
    Written,
    id_for_key,
    request_hash,
    same_request,
)

__all__ = ["Identity", "IssuedKey", "TenantOpened", "Written", "id_for_key", "request_hash"]

TOKEN_PREFIX = "gpc"


def owner_id_of(tenant_id: UUID) -> UUID:
    return uuid5(tenant_id, "owner")


def key_id_of(prefix: str) -> UUID:
    return uuid5(KEY_NAMESPACE, f"apikey:{prefix}")


def secret_hash(secret: str) -> str:
    """SHA-256 suffices: the secret is 192 random bits, not a password."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedKey:
    """A new key. ``token`` is the only copy of the secret: it is never stored or shown again."""

    id: UUID
    version: int
    token: str


@dataclass(frozen=True)
class TenantOpened:
    tenant: Written
    owner_id: UUID
    key: IssuedKey | None  # None when an idempotent retry replays the first answer


class Identity(ContextApplication):
    """The identity context's application: one notification log, relayed to identity.* topics."""

    name = "identity"

    def create_tenant(
        self, name: str, idempotency_key: str | None, now: datetime, owner_email: str | None = None
    ) -> TenantOpened:
        tenant_id = id_for_key("tenant", idempotency_key)
        digest = request_hash(name=name.strip(), owner_email=owner_email)
        existing = self.find(Tenant, tenant_id)
        if existing is not None:
            return self._replayed(existing, digest)
        tenant = Tenant.register(tenant_id, name, digest)
        owner = User.add(owner_id_of(tenant_id), tenant_id, owner_email, OWNER, digest)
        key, token = self._new_key(KeyGrant(tenant_id, owner.id, OWNER, name="owner"), now)
        try:
            self.save(tenant, owner, key)
        except IntegrityError:
            return self._replayed(self.repository.get(tenant_id), digest)
        written = Written(tenant.id, tenant.version, created=True)
        return TenantOpened(written, owner.id, IssuedKey(key.id, key.version, token))

    def add_user(
        self, tenant_id: UUID, email: str | None, role: str, idempotency_key: str | None
    ) -> Written:
        self.get(Tenant, tenant_id)
        user_id = id_for_key(f"user:{tenant_id}", idempotency_key)
        digest = request_hash(email=email, role=role)
        return self.create_once(User.add(user_id, tenant_id, email, role, digest), digest)

    def issue_key(self, grant: KeyGrant, now: datetime) -> IssuedKey:
        if grant.user_id is not None:
            user = self.get(User, grant.user_id)
            if user.tenant_id != grant.tenant_id:
                raise NotFoundError(f"user {grant.user_id} not found")
        key, token = self._new_key(grant, now)
        self.save(key)
        return IssuedKey(key.id, key.version, token)

    def issue_ops_key(self, name: str, now: datetime) -> IssuedKey:
        return self.issue_key(KeyGrant(None, None, OPS, name=name), now)

    def revoke_key(self, key_id: UUID, tenant_id: UUID | None, now: datetime) -> Written:
        def revoke(key: ApiKey) -> None:
            if tenant_id is not None and key.tenant_id != tenant_id:
                raise NotFoundError(f"api key {key_id} not found")
            key.revoke(now)

        key, _ = self.update(ApiKey, key_id, revoke)
        return Written(key.id, key.version, created=False)

    def authenticate(self, token: str, now: datetime) -> Principal:
        """Checked against the event store itself, so a revocation counts on the next call."""
        prefix, secret = _split(token)
        key = self.find(ApiKey, key_id_of(prefix))
        if key is None or not hmac.compare_digest(key.secret_hash, secret_hash(secret)):
            raise AuthenticationFailedError("unknown or wrong API key")
        if not key.usable_at(now):
            raise AuthenticationFailedError("the API key is revoked or expired")
        return key.principal()

    def get_tenant(self, tenant_id: UUID) -> Tenant:
        return self.get(Tenant, tenant_id)

    def _new_key(self, grant: KeyGrant, now: datetime) -> tuple[ApiKey, str]:
        prefix, secret = secrets.token_hex(6), secrets.token_urlsafe(24)
        key = ApiKey.issue(key_id_of(prefix), prefix, secret_hash(secret), grant, now)
        return key, f"{TOKEN_PREFIX}_{prefix}_{secret}"

    def _replayed(self, tenant: Tenant, digest: str) -> TenantOpened:
        written = same_request(tenant, digest)
        return TenantOpened(written, owner_id_of(tenant.id), None)


def _split(token: str) -> tuple[str, str]:
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or len(parts[1]) != 12:
        raise AuthenticationFailedError("not a gpucloud API key")
    return parts[1], parts[2]
