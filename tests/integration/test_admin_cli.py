"""`gpucloud admin`: bootstrap a tenant and an ops key from the command line."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from infra.bootstrap import build_system
from infra.settings import Settings
from tests.support import gpucloud

pytestmark = pytest.mark.integration


def test_admin_creates_a_tenant_whose_owner_key_authenticates(settings: Settings) -> None:
    tenant = gpucloud(settings, "admin", "tenant", "create", "Acme Research", "--json")
    ops = gpucloud(settings, "admin", "ops-key", "create", "--json")

    assert tenant.returncode == 0 and ops.returncode == 0, tenant.stderr + ops.stderr
    opened, issued = json.loads(tenant.stdout), json.loads(ops.stdout)
    system = build_system(settings)
    try:
        owner = system.identity.authenticate(opened["api_key"], datetime.now(UTC))
        platform = system.identity.authenticate(issued["api_key"], datetime.now(UTC))
    finally:
        system.close_write_side()
    assert (str(owner.tenant_id), owner.role) == (opened["tenant_id"], "owner")
    assert (platform.tenant_id, platform.role) == (None, "ops")


def test_admin_refuses_a_bad_name_with_a_one_line_error(settings: Settings) -> None:
    answer = gpucloud(settings, "admin", "tenant", "create", "<script>")
    assert answer.returncode == 2
    assert answer.stderr.startswith("error:") and "Traceback" not in answer.stderr
