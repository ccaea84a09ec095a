"""esdbclient's asyncio client, which sends every append (metadata too) through BatchAppend and
cancels the call after the first response."""

from __future__ import annotations

import asyncio
import uuid

from esdbclient import AsyncEventStoreDBClient, CaughtUp, NewEvent, StreamState

from eventsourcing_cqrs.testing.esdb_fixtures import EsdbEndpoint


def test_async_client_appends_reads_sets_metadata_and_subscribes(esdb_server: EsdbEndpoint) -> None:
    async def scenario() -> None:
        client = AsyncEventStoreDBClient(esdb_server.uri)
        await client.connect()
        try:
            stream = f"Async-{uuid.uuid4()}"
            events = [NewEvent(type="Happened", data=b"{}") for _ in range(3)]
            position = await client.append_events(
                stream, current_version=StreamState.NO_STREAM, events=events
            )
            await client.set_stream_metadata(stream, metadata={"owner": "alice"})

            read = await client.get_stream(stream)
            assert [e.id for e in read] == [e.id for e in events]
            assert read[-1].commit_position == position
            assert await client.get_stream_metadata(stream) == ({"owner": "alice"}, 0)

            subscription = await client.subscribe_to_all(
                commit_position=read[0].commit_position,
                filter_include=[stream],
                filter_by_stream_name=True,
                include_caught_up=True,
                timeout=10,
            )
            seen = []
            async for item in subscription:
                if isinstance(item, CaughtUp):
                    break
                seen.append(item.id)
            await subscription.stop()
            assert seen == [e.id for e in events[1:]]
        finally:
            await client.close()

    asyncio.run(scenario())
