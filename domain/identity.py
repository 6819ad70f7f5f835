"""Identity: users of a tenant, their roles, and the API keys they call the API with."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import DomainError, ValidationFailedError

OWNER, MEMBER, BILLING, AUDITOR, OPS = "owner", "member", "billing", "auditor", "ops"
TENANT_ROLES = (OWNER, MEMBER, BILLING, AUDITOR)
ROLES = (*TENANT_ROLES, OPS)
PLATFORM = UUID(int=0)  # the "tenant" of platform-level events (ops keys)
_NOT = r"[^@\s\x00-\x1f\x7f]"  # no @, no whitespace, no control characters
EMAIL_PATTERN = rf"^{_NOT}{{1,64}}@{_NOT}{{1,190}}\.{_NOT}{{2,63}}$"  # also the contract's
_EMAIL = re.compile(EMAIL_PATTERN)


class AuthenticationFailedError(DomainError):
    """The credentials are unknown, wrong, revoked or expired (the caller is not told which)."""


def check_email(email: str) -> str:
    cleaned = email.strip().lower()
    if not _EMAIL.match(cleaned):
        raise ValidationFailedError(f"{email!r} is not an email address")
    return cleaned


def check_role(role: str, allowed: tuple[str, ...] = TENANT_ROLES) -> str:
    if role not in allowed:
        raise ValidationFailedError(f"role must be one of {', '.join(allowed)}")
    return role


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key, its user and tenant (None for platform ops), role, scope."""

    key_id: UUID
    user_id: UUID | None
    tenant_id: UUID | None
    role: str
    read_only: bool

    @property
    def actor(self) -> str:
        return f"key:{self.key_id}" + (f",user:{self.user_id}" if self.user_id else "")


class User(Aggregate):
    """A person (or robot) of one tenant, with one role."""

    TOPIC = "gpucloud.identity.User"

    @event("Created", topic="gpucloud.identity.User.Created")
    def __init__(
        self, id: UUID, tenant_id: UUID, email: str | None, role: str, request_hash: str
    ) -> None:
        self.tenant_id, self.email, self.role = tenant_id, email, role
        self.request_hash = request_hash

    @classmethod
    def add(cls, user_id: UUID, tenant_id: UUID, email: str | None, role: str, digest: str) -> User:
        """A user without an email is a robot (a CI system, a service)."""
        cleaned = check_email(email) if email is not None else None
        return cls(user_id, tenant_id, cleaned, check_role(role), digest)


@dataclass(frozen=True)
class KeyGrant:
    """What a new key may do: the tenant and user it acts for, its role and scope."""

    tenant_id: UUID | None
    user_id: UUID | None
    role: str
    read_only: bool = False
    name: str = "default"
    expires_at: datetime | None = None


class ApiKey(Aggregate):
    """An API key: only a hash of its secret is kept; the id derives from its public prefix."""

    TOPIC = "gpucloud.identity.ApiKey"

    @event("Created", topic="gpucloud.identity.ApiKey.Created")
    def __init__(
        self,
        id: UUID,
        prefix: str,
        secret_hash: str,
        tenant_id: UUID | None,
        user_id: UUID | None,
        role: str,
        read_only: bool,
        name: str,
        expires_at: datetime | None,
    ) -> None:
        self.prefix, self.secret_hash = prefix, secret_hash
        self.tenant_id, self.user_id, self.role = tenant_id, user_id, role
        self.read_only, self.name, self.expires_at = read_only, name, expires_at
        self.revoked_at: datetime | None = None

    @classmethod
    def issue(
        cls, key_id: UUID, prefix: str, secret_hash: str, grant: KeyGrant, now: datetime
    ) -> ApiKey:
        _check_grant(grant, now)
        g = grant
        return cls(
            key_id,
            prefix,
            secret_hash,
            g.tenant_id,
            g.user_id,
            g.role,
            g.read_only,
            g.name.strip(),
            g.expires_at,
        )

    def revoke(self, now: datetime) -> None:
        """Idempotent: revoking a revoked key changes nothing."""
        if self.revoked_at is None:
            self._revoked(now, self.tenant_id)

    @event("Revoked", topic="gpucloud.identity.ApiKey.Revoked")
    def _revoked(self, revoked_at: datetime, tenant_id: UUID | None) -> None:
        """Carries the tenant too, so the event is readable without the key's history."""
        self.revoked_at = revoked_at

    def usable_at(self, now: datetime) -> bool:
        expired = self.expires_at is not None and now >= self.expires_at
        return self.revoked_at is None and not expired

    def principal(self) -> Principal:
        return Principal(self.id, self.user_id, self.tenant_id, self.role, self.read_only)


def _check_grant(grant: KeyGrant, now: datetime) -> None:
    check_role(grant.role, ROLES)
    if (grant.role == OPS) != (grant.tenant_id is None):
        raise ValidationFailedError("ops keys belong to the platform; tenant keys to a tenant")
    if grant.expires_at is not None and grant.expires_at <= now:
        raise ValidationFailedError("expires_at must be in the future")
    if not 1 <= len(grant.name.strip()) <= 100:
        raise ValidationFailedError("a key name is 1-100 characters")
