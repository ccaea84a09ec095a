"""The SQLite store's fast row-to-event conversion builds exactly what the constructors build."""

from __future__ import annotations

import pickle
import uuid

import pytest

from eventsourcing_cqrs.event_store import sqlite
from eventsourcing_cqrs.event_store.port import RecordedEvent

ROWS = [
    (1, "Account-1", 0, uuid.uuid4().bytes, "Opened", b'{"a":1}', b"", "application/json", 0),
    (2**62, "s", 2**40, bytes(16), "$system", b"", b"{}", "text/plain", 1_700_000_000_999_999),
    (3, "é", 5, b"\xff" * 16, "T", b"x", b"m", "application/octet-stream", 253_402_300_799_000_000),
]


def test_the_fast_conversion_is_in_use_on_this_python() -> None:
    assert sqlite._to_event is not sqlite._to_event_plainly


@pytest.mark.parametrize("row", ROWS)
def test_the_fast_conversion_equals_the_constructors(row: sqlite._Row) -> None:
    fast, plain = sqlite._to_event(row), sqlite._to_event_plainly(row)
    assert type(fast) is RecordedEvent
    assert fast == plain
    assert repr(fast) == repr(plain)
    assert hash(fast) == hash(plain)
    assert type(fast.id) is uuid.UUID
    assert fast.id.bytes == row[3]
    assert fast.id.is_safe is plain.id.is_safe
    assert pickle.loads(pickle.dumps(fast)) == plain  # noqa: S301 - our own bytes
    with pytest.raises(AttributeError):
        fast.position = 0  # type: ignore[misc]
    with pytest.raises(TypeError):
        fast.id.int = 0  # type: ignore[misc]
