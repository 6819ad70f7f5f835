"""Identity rules, given / when / then: users, roles, API keys, authentication."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from domain.errors import NotFoundError, ValidationFailedError
from domain.identity import (
    PLATFORM,
    ApiKey,
    AuthenticationFailedError,
    KeyGrant,
    User,
    check_email,
)
from handlers.identity import Identity, key_id_of, secret_hash

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def app() -> Identity:
    return Identity(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


@pytest.mark.parametrize("email", ["a", "a@b", "@b.io", "a b@c.io", "x" * 70 + "@b.io"])
def test_bad_emails_are_refused(email: str) -> None:
    with pytest.raises(ValidationFailedError):
        check_email(email)


def test_emails_are_kept_trimmed_and_lowercase() -> None:
    assert check_email("  Ada@Example.ORG ") == "ada@example.org"


@pytest.mark.parametrize("role", ["ops", "admin", "", "Owner"])
def test_a_user_gets_a_tenant_role_only(role: str) -> None:
    with pytest.raises(ValidationFailedError):
        User.add(uuid4(), uuid4(), None, role, "h")


@pytest.mark.parametrize(
    "grant",
    [
        KeyGrant(None, None, "owner"),  # a tenant role without a tenant
        KeyGrant(uuid4(), None, "ops"),  # ops inside a tenant
        KeyGrant(uuid4(), None, "root"),
        KeyGrant(uuid4(), None, "owner", expires_at=NOW),
        KeyGrant(uuid4(), None, "owner", name="  "),
    ],
)
def test_keys_with_impossible_grants_are_refused(grant: KeyGrant) -> None:
    with pytest.raises(ValidationFailedError):
        ApiKey.issue(uuid4(), "0123456789ab", "h", grant, NOW)


def test_a_key_is_usable_until_it_expires_or_is_revoked() -> None:
    grant = KeyGrant(uuid4(), uuid4(), "member", expires_at=NOW + timedelta(hours=1))
    key = ApiKey.issue(uuid4(), "0123456789ab", "h", grant, NOW)

    assert key.usable_at(NOW)
    assert not key.usable_at(NOW + timedelta(hours=1))
    key.revoke(NOW)
    key.revoke(NOW + timedelta(minutes=1))
    assert not key.usable_at(NOW)
    assert [type(e).__name__ for e in key.collect_events()] == ["Created", "Revoked"]


def test_a_tenant_opens_with_its_owner_and_a_working_owner_key() -> None:
    identity = app()

    opened = identity.create_tenant("Acme", None, NOW, "ada@acme.io")

    assert opened.key is not None
    who = identity.authenticate(opened.key.token, NOW)
    assert (who.tenant_id, who.user_id, who.role) == (opened.tenant.id, opened.owner_id, "owner")


@pytest.mark.parametrize("mangle", [str.upper, lambda t: t[:-1] + "x", lambda t: "gpc_" + t[4:10]])
def test_a_wrong_or_malformed_token_does_not_authenticate(mangle: object) -> None:
    identity = app()
    opened = identity.create_tenant("Acme", None, NOW)
    assert opened.key is not None
    with pytest.raises(AuthenticationFailedError):
        identity.authenticate(mangle(opened.key.token), NOW)  # type: ignore[operator]


def test_only_a_hash_of_the_secret_is_stored() -> None:
    identity = app()
    opened = identity.create_tenant("Acme", None, NOW)
    assert opened.key is not None
    _, prefix, secret = opened.key.token.split("_", 2)

    key = identity.get(ApiKey, key_id_of(prefix))

    assert key.secret_hash == secret_hash(secret) and secret not in repr(vars(key))


def test_revocation_is_seen_by_the_next_authentication() -> None:
    identity = app()
    opened = identity.create_tenant("Acme", None, NOW)
    assert opened.key is not None
    identity.revoke_key(opened.key.id, opened.tenant.id, NOW)
    with pytest.raises(AuthenticationFailedError):
        identity.authenticate(opened.key.token, NOW)


def test_another_tenants_key_cannot_be_revoked_and_reads_as_not_found() -> None:
    identity = app()
    mine, theirs = (identity.create_tenant(n, None, NOW) for n in ("Mine", "Theirs"))
    assert theirs.key is not None
    with pytest.raises(NotFoundError):
        identity.revoke_key(theirs.key.id, mine.tenant.id, NOW)


def test_a_key_for_a_user_of_another_tenant_is_refused() -> None:
    identity = app()
    mine, theirs = (identity.create_tenant(n, None, NOW) for n in ("Mine", "Theirs"))
    with pytest.raises(NotFoundError):
        identity.issue_key(KeyGrant(mine.tenant.id, theirs.owner_id, "owner"), NOW)


def test_platform_ops_keys_belong_to_no_tenant() -> None:
    identity = app()
    issued = identity.issue_ops_key("ci", NOW)
    who = identity.authenticate(issued.token, NOW)
    assert (who.role, who.tenant_id, who.user_id) == ("ops", None, None)
    assert PLATFORM.int == 0
