"""``escqrs streams list | read`` on SQLite and EventStoreDB."""

from __future__ import annotations

import json

from cli._helpers import Backend, escqrs, ok


def test_streams_list_shows_each_stream_with_its_size(backend: Backend) -> None:
    table = ok(escqrs("streams", "list", "--store", backend.store))
    assert backend.ada in table
    assert "last written (UTC)" in table

    listed = {s["stream"]: s for s in json.loads(ok(escqrs("streams", "list", "--json", env=backend.env())))}
    assert (listed[backend.ada]["events"], listed[backend.ada]["last_revision"]) == (4, 3)
    assert (listed[backend.grace]["events"], listed[backend.grace]["deleted"]) == (4, False)


def test_streams_read_shows_payloads(backend: Backend) -> None:
    table = ok(escqrs("streams", "read", backend.ada, "--limit", "2", env=backend.env()))
    assert '"owner":"Ada Lovelace"' in table
    assert "MoneyWithdrawn" not in table

    events = json.loads(
        ok(escqrs("streams", "read", backend.ada, "--backwards", "--json", env=backend.env()))
    )
    assert [e["revision"] for e in events] == [3, 2, 1, 0]
    assert events[0]["data"]["balance"] == "905.00"
    assert events[0]["metadata"]["actor"] == "atm-17"
