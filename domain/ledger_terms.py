"""The Ledger's vocabulary: its errors, the values its commands return, and input checks.

Money is integer micro-dollars. ``True`` and ``1.0`` are refused, not coerced; amounts are
positive except an adjustment, which is signed (negative debits the tenant).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from domain.errors import DomainError, NotFoundError, ValidationFailedError

MAX_AMOUNT = 10**15  # micro-dollars: $1e9, far inside PostgreSQL's bigint
REASON_MAX = 500
OPEN, CAPTURED, VOIDED, EXPIRED = "open", "captured", "voided", "expired"
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # visible ASCII: UUIDs, Stripe ids, window names


class InsufficientFundsError(DomainError):
    """The posting would take the available balance below the ledger's floor."""


class HoldNotOpenError(DomainError):
    """The hold was captured, voided or expired (or is past its expiry, for a capture)."""


class HoldAmountExceededError(DomainError):
    """A capture asked for more than the hold reserved."""


REJECTIONS: dict[str, type[DomainError]] = {
    "insufficient-funds": InsufficientFundsError,
    "hold-not-open": HoldNotOpenError,
    "hold-not-found": NotFoundError,
    "hold-amount-exceeded": HoldAmountExceededError,
}


class _Immutable:
    """A frozen value of immutable parts: its deep copy is itself. The repository deep-copies
    a cached ledger for every command, and a ledger keeps one value per key it has seen."""

    __slots__ = ()

    def __deepcopy__(self, memo: dict[int, object]) -> _Immutable:
        return self


@dataclass(frozen=True)
class Receipt(_Immutable):
    """An accepted posting: the event that recorded it (its version and hash) and its effect.

    ``amount`` is what was posted, held or released; ``debit_up_to`` reports the part it could
    not take as ``remainder``. ``replayed`` is True when the key had already been answered.
    """

    ledger_id: UUID
    key: str
    kind: str
    request_hash: str
    version: int
    hash: str
    amount: int
    remainder: int = 0
    hold_id: str | None = None
    replayed: bool = False

    @property
    def taken(self) -> int:
        return self.amount


@dataclass(frozen=True)
class Rejection(_Immutable):
    """A refused posting, remembered so that the same request is refused again."""

    key: str
    kind: str
    request_hash: str
    reason: str
    detail: str

    def error(self) -> DomainError:
        return REJECTIONS[self.reason](self.detail)


@dataclass(frozen=True)
class Hold(_Immutable):
    hold_id: str
    amount: int
    expires_at: datetime
    state: str = OPEN


@dataclass(frozen=True)
class Balances:
    ledger_id: UUID
    tenant_id: UUID
    version: int
    posted: int
    held: int
    available: int
    floor: int
    depleted: bool


def check_amount(value: object, field: str = "amount") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_AMOUNT:
        raise ValidationFailedError(f"{field} must be an integer of micro-dollars, 1 to 1e15")
    return value


def check_signed_amount(value: object) -> int:
    """An adjustment: non-zero, negative to debit the tenant."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < abs(value) <= MAX_AMOUNT:
        raise ValidationFailedError(
            "amount must be a non-zero integer of micro-dollars, at most 1e15 either way"
        )
    return value


def check_floor(value: object) -> int:
    """A floor below zero is a credit line; above zero is not offered."""
    if isinstance(value, bool) or not isinstance(value, int) or not -MAX_AMOUNT <= value <= 0:
        raise ValidationFailedError("floor must be an integer of micro-dollars, at most 0")
    return value


def check_key(value: object) -> str:
    if not (isinstance(value, str) and _KEY.match(value)):
        raise ValidationFailedError("an idempotency key is 1-255 visible ASCII characters")
    return value


# Two namespaces of idempotency keys share a ledger: the keys the system derives (``runway:``,
# ``runway-void:``, ``usage:``, later ``stripe:``) and those a client or an operator sent, which
# are kept as ``client:<key>``. No key from outside can then name, or block, an internal one.
CLIENT_KEYS = "client:"


def client_key(key: object) -> str:
    """A key that came from outside (an ``Idempotency-Key``), in the clients' namespace."""
    return check_key(CLIENT_KEYS + check_key(key))


def runway_key(allocation_id: object) -> str:
    """The key of an allocation's runway hold."""
    return f"runway:{allocation_id}"


def runway_void_key(allocation_id: object) -> str:
    return f"runway-void:{allocation_id}"


def check_moment(value: object, field: str = "now") -> datetime:
    if not (isinstance(value, datetime) and value.utcoffset() is not None):
        raise ValidationFailedError(f"{field} must be a datetime with a time zone")
    return value


def check_reason(value: object) -> str:
    cleaned = value.strip() if isinstance(value, str) else ""
    if not 1 <= len(cleaned) <= REASON_MAX:
        raise ValidationFailedError(f"an adjustment needs a reason of 1-{REASON_MAX} characters")
    return cleaned


def check_hold_id(value: object) -> str:
    if not (isinstance(value, str) and 1 <= len(value) <= 64):
        raise ValidationFailedError("hold_id must be a hold's id")
    return value
