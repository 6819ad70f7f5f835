"""HTTP shapes of the ledger. Money is integer micro-dollars: an integer in answers, a string of
digits in request bodies (no client rounds it through a float)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from domain.ledger_terms import Receipt
from gateways.http.text import text

Kind = Literal[
    "credit", "debit", "refund", "adjust", "clawback", "hold", "capture", "void", "expire"
]
HoldState = Literal["open", "captured", "voided", "expired"]


class BalancesOut(BaseModel):
    tenant_id: UUID
    posted: int = Field(description="integer micro-dollars")
    held: int
    available: int
    floor: int
    depleted: bool


class PostingItem(BaseModel):
    id: UUID
    version: int
    kind: str
    key: str
    debit_account: str
    credit_account: str
    amount: int
    hold_id: str | None
    at: datetime
    hash: str


class PostingPage(BaseModel):
    items: list[PostingItem]
    next_cursor: str | None


class HoldItem(BaseModel):
    id: str
    amount: int
    state: str
    expires_at: datetime
    placed_at: datetime
    closed_at: datetime | None


class HoldPage(BaseModel):
    items: list[HoldItem]
    next_cursor: str | None


class Adjustment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    amount: str = Field(
        pattern=r"^-?([1-9][0-9]{0,14}|1000000000000000)$",  # 1 to 1e15 micro-dollars
        description="integer micro-dollars as a string; negative debits the tenant",
        examples=["5000000", "-250000"],
    )
    reason: str = text(500, min_length=1)


class ReceiptOut(BaseModel):
    ledger_id: UUID
    key: str
    kind: str
    amount: int
    version: int
    hash: str
    replayed: bool

    @classmethod
    def of(cls, receipt: Receipt) -> ReceiptOut:
        return cls(
            ledger_id=receipt.ledger_id,
            key=receipt.key,
            kind=receipt.kind,
            amount=receipt.amount,
            version=receipt.version,
            hash=receipt.hash,
            replayed=receipt.replayed,
        )


class PlatformAccount(BaseModel):
    account: str
    balance: int = Field(description="integer micro-dollars; credits minus debits")
