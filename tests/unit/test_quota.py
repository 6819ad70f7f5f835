"""The GPU quota: the platform's default limit, or the one ops set for the tenant."""

from __future__ import annotations

from uuid import uuid4

import pytest

from domain.errors import ValidationFailedError
from domain.quota import MAX_LIMIT, GpuQuota, QuotaExceededError


def test_the_default_limit_holds_until_ops_set_one_and_again_after_they_unset_it() -> None:
    quota = GpuQuota(tenant_id=uuid4())
    quota.reserve(uuid4(), 2, default_limit=2)
    with pytest.raises(QuotaExceededError):
        quota.reserve(uuid4(), 1, default_limit=2)

    assert quota.set_limit(3) is True
    quota.reserve(uuid4(), 1, default_limit=2)
    assert (quota.in_use, quota.limit_or(2)) == (3, 3)
    assert quota.set_limit(3) is False  # the same limit again: nothing recorded
    assert quota.set_limit(None) is True
    with pytest.raises(QuotaExceededError):
        quota.reserve(uuid4(), 1, default_limit=3)  # back to the default: 3 in use of 3
    assert quota.limit_or(5) == 5


def test_a_limit_below_what_is_in_use_refuses_new_requests_and_frees_nothing() -> None:
    quota = GpuQuota(tenant_id=uuid4())
    held = uuid4()
    quota.reserve(held, 4, default_limit=8)
    quota.set_limit(1)

    with pytest.raises(QuotaExceededError):
        quota.reserve(uuid4(), 1, default_limit=8)
    assert quota.in_use == 4
    quota.free(held)
    quota.reserve(uuid4(), 1, default_limit=8)
    assert quota.in_use == 1


@pytest.mark.parametrize("gpus", [-1, MAX_LIMIT + 1, 1.0, True, "3"])
def test_a_limit_that_is_not_a_whole_number_of_gpus_is_refused(gpus: object) -> None:
    quota = GpuQuota(tenant_id=uuid4())
    with pytest.raises(ValidationFailedError):
        quota.set_limit(gpus)  # type: ignore[arg-type]
    assert quota.limit is None and len(quota.collect_events()) == 1  # Opened only
