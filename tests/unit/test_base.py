"""What every context's application shares."""

from __future__ import annotations

from uuid import uuid4

import pytest

from domain.tenant import Tenant
from handlers.base import MAX_EVENTS_PER_SAVE, TooManyEventsError
from handlers.identity import Identity


def test_a_save_too_large_for_one_transaction_is_refused_before_it_starts() -> None:
    app = Identity(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    tenants = [Tenant.register(uuid4(), f"t{i}", "h") for i in range(MAX_EVENTS_PER_SAVE + 1)]

    with pytest.raises(TooManyEventsError):
        app.save(*tenants)

    assert app.recorder.max_notification_id() is None
    app.save(*tenants[:MAX_EVENTS_PER_SAVE])
    assert app.recorder.max_notification_id() == MAX_EVENTS_PER_SAVE
