"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from infra.bootstrap import System, build_system
from infra.settings import Settings
from tests.support import Stack, running_stack


@pytest.fixture
async def direct_system(settings: Settings) -> AsyncIterator[System]:
    """A System on this test's database with its read pool open, that the test drives directly
    (the worker's passes, the handlers) beside the roles under test."""
    built = build_system(settings)
    await built.open()
    yield built
    await built.close()


@pytest.fixture
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    """The API on a socket with the relay and the projector running, and a client for it."""
    async with running_stack(settings) as running:
        yield running
