"""One trace from the command to the projection, through FastStream's OpenTelemetry middleware."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateways.processes import relays_for
from gateways.projector import build_projector
from infra import messages
from infra.bootstrap import build_system
from infra.eventstore import event_metadata
from infra.settings import Settings
from tests.support import eventually

pytestmark = pytest.mark.integration
TRACE_ID = "5bf92f3577b34da6a3ce929d0e0e4736"


async def test_the_projector_span_links_to_the_trace_of_the_command(settings: Settings) -> None:
    system = build_system(settings)
    await system.open()
    with event_metadata(traceparent=f"00-{TRACE_ID}-00f067aa0ba902b7-01"):
        written = system.identity.create_tenant("Traced", None, datetime.now(UTC)).tenant
    relay = relays_for(system)[0]  # identity
    await relay.publish_pending()
    await relay.close()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    partitions = {topic: 3 for topic in messages.topics()}
    app = build_projector(settings, system.pool, partitions, provider)
    await app.start()
    try:

        async def projected() -> bool:
            async with system.pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT trace_id FROM tenants WHERE id = %s", (written.id,)
                )
                return await cur.fetchone() == (TRACE_ID,)

        await eventually(projected)
    finally:
        await app.stop()
        await system.close()

    linked = {
        format(link.context.trace_id, "032x")
        for span in exporter.get_finished_spans()
        for link in span.links
    }
    assert TRACE_ID in linked  # the batch's consumer span links to the command's trace
