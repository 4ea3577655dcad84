"""Shared pytest configuration. The e2e harness lives in tests/harness.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from kvstore.local.dns import DNSServer, RecordTable


@pytest.fixture
async def dns() -> AsyncIterator[DNSServer]:
    """A real DNS server on loopback answering for the headless Service (no pods yet)."""
    server = DNSServer(RecordTable(port=8080))
    await server.start()
    yield server
    await server.stop()
