"""Fixtures of the emulator's tests: a seeded portal without a rate limit, and a client into it in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2
import pytest

from b24_mcp.sandbox.emulator import Portal
from b24_mcp.sandbox.seed import seeded_portal
from emulator.emulator_helpers import make_client


@pytest.fixture
def portal() -> Portal:
    return seeded_portal(rate_limit=None)


@pytest.fixture
async def client(portal: Portal) -> AsyncIterator[httpx2.AsyncClient]:
    async with make_client(portal) as c:
        yield c
