"""Contract test suites for the read side: every read model store, and the runner on each.

Subclass each suite once per adapter and provide a ``read_model_store_factory`` fixture
returning a zero-argument callable that opens a new connection to *one shared*, empty store::

    class TestSQLiteReadModelStore(ReadModelStoreContract):
        @pytest.fixture
        def read_model_store_factory(self, tmp_path):
            return functools.partial(SQLiteReadModelStore, tmp_path / "views.db")

:class:`ProjectionRunnerContract` also takes an ``event_store`` fixture (an
:class:`~eventsourcing_cqrs.event_store.memory.InMemoryEventStore` unless overridden). Tests never
assume an empty event store: each uses its own event type and streams.

The projections used here (:class:`Tally` and friends) are importable, so process-level tests
(SIGKILL, lease takeover) can run them in child processes.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, ClassVar

import pytest

from eventsourcing_cqrs.errors import InvalidInputError
from eventsourcing_cqrs.event_store.memory import InMemoryEventStore
from eventsourcing_cqrs.event_store.port import EventStore, NewEvent, RecordedEvent, StreamState
from projections import (
    Backoff,
    EventContext,
    FailurePolicy,
    Progress,
    Projection,
    ProjectionFailedError,
    ProjectionRunner,
    ProjectionState,
    ProjectionVersionError,
    RunOutcome,
    TableSpec,
    WaitTimeoutError,
    projection_status,
    rebuild,
    segment_of,
    wait_for,
)
from projections.errors import (
    DocumentNotFoundError,
    GenerationChangedError,
    InvalidNameError,
    LeaseLostError,
    ParkedEventNotFoundError,
    ProjectionNotFoundError,
    ProjectionRunningError,
    UnknownTableError,
    UnsupportedOperationError,
)
from projections.read_model_store.memory import InMemoryReadModelStore
from projections.read_model_store.port import (
    MAX_SEGMENTS,
    Document,
    Generation,
    Lease,
    LeaseRole,
    ProjectionTransaction,
    ReadModelStore,
)
from projections.read_model_store.sqlite import SQLiteReadModelStore

__all__ = [
    "ParkingUnstorableTally",
    "ProjectionRunnerContract",
    "ReadModelStoreContract",
    "ReadModelStoreFactory",
    "SegmentedTally",
    "Tally",
    "TallyV2",
    "UnstorableTally",
    "append_tallied",
    "break_lease",
    "read_model_snapshot",
]

ReadModelStoreFactory = Callable[[], ReadModelStore]

_SPECS = (TableSpec("accounts", indexes=("owner", "balance")), TableSpec("notes"))


# --------------------------------------------------------------------------- projections used by the suites


class Tally(Projection):
    """Counts events per stream, and how often each event was applied (so a double shows).

    ``poison(event)`` returning true makes the handler raise for that event; ``delay`` slows
    each event down (for kill tests).
    """

    name = "tally"
    version = 1
    tables = (TableSpec("streams", indexes=("count",)), TableSpec("applied"))
    backoff = Backoff(max_attempts=3, base_delay=0.001, max_delay=0.01)

    def __init__(
        self,
        event_type: str = "Tallied",
        *,
        poison: Callable[[RecordedEvent], bool] | None = None,
        delay: float = 0.0,
    ) -> None:
        super().__init__()
        self._poison = poison
        self._delay = delay
        self.on_recorded(event_type, self.tallied)

    def tallied(self, event: RecordedEvent, context: EventContext) -> None:
        """Count the event in its stream and record that it was applied."""
        if self._delay:
            time.sleep(self._delay)
        if self._poison is not None and self._poison(event):
            raise ValueError(f"poisoned event at revision {event.revision} of {event.stream}")
        streams = context.table("streams")
        row = streams.get(event.stream) or {"count": 0}
        # Whether the stream's events were applied in the order of their revisions.
        in_order = bool(row.get("in_order", True)) and event.revision > row.get("last_revision", -1)
        streams.put(
            event.stream,
            {
                "count": row["count"] + 1,
                "last_revision": event.revision,
                "version": self.version,
                "in_order": in_order,
            },
        )
        applied = context.table("applied")
        seen = applied.get(str(event.id))
        applied.put(
            str(event.id), {"times": 1 if seen is None else seen["times"] + 1, "stream": event.stream}
        )


class TallyV2(Tally):
    """The same tally after a logic change: the version is bumped."""

    version = 2


class ParkingTally(Tally):
    """A tally that parks events that keep failing instead of stopping."""

    failure_policy = FailurePolicy.PARK


class UnstorableTally(Tally):
    """A tally whose handler writes a document no store can hold (a NUL in a string) for the
    events ``unstorable(event)`` picks."""

    def __init__(self, event_type: str, *, unstorable: Callable[[RecordedEvent], bool]) -> None:
        super().__init__(event_type)
        self._unstorable = unstorable

    def tallied(self, event: RecordedEvent, context: EventContext) -> None:
        if self._unstorable(event):
            context.table("streams").put(event.stream, {"count": 0, "owner": "Ada\x00Lovelace"})
            return
        super().tallied(event, context)


class ParkingUnstorableTally(UnstorableTally):
    """:class:`UnstorableTally` that parks instead of stopping."""

    failure_policy = FailurePolicy.PARK


class SegmentedTally(Tally):
    """:class:`Tally` split into four segments (by a hash of the stream)."""

    segments = 4


class SegmentedTallyV2(SegmentedTally):
    """The segmented tally after a logic change: the version is bumped."""

    version = 2


class TwoSegmentTally(Tally):
    """:class:`Tally` split into two segments: the same version, a different split."""

    segments = 2


class ParkingSegmentedTally(SegmentedTally):
    """A segmented tally that parks events that keep failing instead of stopping."""

    failure_policy = FailurePolicy.PARK


class WorkerTally(SegmentedTally):
    """A segmented tally that also records, in each stream's document, which worker applied the
    stream's latest event (two runners in one process share an owner ``host:pid``)."""

    def __init__(self, event_type: str, *, worker: str) -> None:
        super().__init__(event_type)
        self._worker = worker

    def tallied(self, event: RecordedEvent, context: EventContext) -> None:
        super().tallied(event, context)
        context.table("streams").update(event.stream, {"worker": self._worker})


class TallyCopy(Tally):
    """:class:`Tally` under another name, to compare read models built on one store."""

    name = "tally_copy"


def append_tallied(events: EventStore, stream: str, count: int, event_type: str = "Tallied") -> int:
    """Append ``count`` events of ``event_type`` to ``stream``; the commit position of the last."""
    result = events.append(
        stream,
        [NewEvent(type=event_type, data=json.dumps({"n": n}).encode(), metadata=b"{}") for n in range(count)],
        expected_version=StreamState.ANY,
    )
    return result.position


def read_model_snapshot(store: ReadModelStore, projection: str, tables: tuple[str, ...]) -> dict[str, Any]:
    """Every document of the live generation's tables (ordered by key), to compare read models."""
    with store.read(projection) as view:
        return {table: view.table(table).find() for table in tables}


def break_lease(store: ReadModelStore, projection: str, role: LeaseRole, segment: int | None = None) -> None:
    """Free a lease for a new taker while its holder still believes it holds it.

    This is what happens to a holder presumed dead: its lock is gone (the lock file replaced,
    its PostgreSQL session ended) while the holder's lease object still says ``held``. The
    next taker's acquisition supersedes its epoch, so the old holder must fail to commit.
    Supports the memory, SQLite and PostgreSQL stores; a contract suite for another adapter
    overrides the suites' ``break_lease`` hook.
    """
    if isinstance(store, InMemoryReadModelStore):
        # The holder keeps the old mutex (still locked); later lease objects get a new one.
        with store._lock:
            store._lease_locks[(projection, role, segment)] = threading.Lock()
        return
    if isinstance(store, SQLiteReadModelStore):
        # The holder keeps its flock on the unlinked file; the next taker locks a new file.
        os.unlink(store._lock_path(projection, role, segment))
        return
    if type(store).__module__ == "projections.read_model_store.postgres":
        import psycopg  # noqa: PLC0415 - only for the PostgreSQL store, an optional extra

        from projections.read_model_store.postgres import PostgresReadModelStore  # noqa: PLC0415

        assert isinstance(store, PostgresReadModelStore)
        key = store._lease_key(projection, role, segment) & 0xFFFF_FFFF_FFFF_FFFF
        with psycopg.connect(store._conninfo, autocommit=True) as connection:
            # Ending the holder's session frees its advisory lock, as a lost connection would.
            connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 1",
                (key >> 32, key & 0xFFFF_FFFF),
            )
        return
    raise NotImplementedError(f"break_lease does not know how to break a lease of {store!r}.")


def _streams_in_segments(segments: int, per_segment: int) -> list[list[str]]:
    """Fresh stream names, ``per_segment`` of them in each segment (by the default sequencing key)."""
    found: list[list[str]] = [[] for _ in range(segments)]
    while any(len(streams) < per_segment for streams in found):
        stream = _stream()
        bucket = found[segment_of(stream, segments)]
        if len(bucket) < per_segment:
            bucket.append(stream)
    return found


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.02)


def _recorded(stream: str, revision: int, position: int) -> RecordedEvent:
    return RecordedEvent(
        id=uuid.uuid4(),
        type="Poison",
        data=b"{}",
        metadata=b"{}",
        stream=stream,
        revision=revision,
        position=position,
        recorded_at=datetime(2024, 1, 2, tzinfo=UTC),
    )


def _unique_type() -> str:
    return f"Tallied{uuid.uuid4().hex[:10]}"


def _stream() -> str:
    return f"Tally-{uuid.uuid4().hex[:10]}"


# --------------------------------------------------------------------------- the store contract


class Writer:
    """The live generation of projection ``accounts_view``, with the lease that writes it."""

    def __init__(self, store: ReadModelStore, lease: Lease, generation: Generation) -> None:
        self.store = store
        self.lease = lease
        self.generation = generation

    def transaction(self) -> AbstractContextManager[ProjectionTransaction]:
        """A unit of work on the generation."""
        return self.store.transaction("accounts_view", self.generation.number, lease=self.lease)


class ReadModelStoreContract:
    """Every sentence of the read model store port, as tests. See the module docstring."""

    #: Whether the adapter runs raw SQL (false for the memory store).
    SUPPORTS_RAW_SQL: ClassVar[bool] = True
    #: The adapter's SQL parameter placeholder.
    PARAMETER: ClassVar[str] = "?"

    @pytest.fixture
    def read_model_store_factory(self) -> ReadModelStoreFactory:
        raise NotImplementedError("subclasses provide read_model_store_factory")

    @pytest.fixture
    def store(self, read_model_store_factory: ReadModelStoreFactory) -> Iterator[ReadModelStore]:
        store = read_model_store_factory()
        yield store
        store.close()

    @pytest.fixture
    def writer(self, store: ReadModelStore) -> Iterator[Writer]:
        lease = store.lease("accounts_view", LeaseRole.RUN)
        assert lease.try_acquire()
        yield Writer(store, lease, store.create_generation("accounts_view", 1, _SPECS, lease=lease))
        lease.release()

    def _put(self, writer: Writer, documents: dict[str, Document], table: str = "accounts") -> None:
        with writer.transaction() as uow:
            for key, document in documents.items():
                uow.table(table).put(key, document)

    # -- documents ------------------------------------------------------------------------

    def test_a_put_document_is_read_back_by_key(self, store: ReadModelStore, writer: Writer) -> None:
        self._put(writer, {"a1": {"owner": "ada", "balance": 10, "tags": ["x"], "nested": {"k": None}}})
        with store.read("accounts_view") as view:
            assert view.table("accounts").get("a1") == {
                "owner": "ada",
                "balance": 10,
                "tags": ["x"],
                "nested": {"k": None},
            }
            assert view.table("accounts").get("missing") is None

    def test_put_replaces_the_whole_document(self, store: ReadModelStore, writer: Writer) -> None:
        self._put(writer, {"a1": {"owner": "ada", "balance": 10}})
        self._put(writer, {"a1": {"owner": "bob"}})
        with store.read("accounts_view") as view:
            assert view.table("accounts").get("a1") == {"owner": "bob"}

    def test_update_merges_top_level_fields_and_returns_the_document(
        self, store: ReadModelStore, writer: Writer
    ) -> None:
        self._put(writer, {"a1": {"owner": "ada", "balance": 10}})
        with writer.transaction() as uow:
            assert uow.table("accounts").update("a1", {"balance": 15, "closed": False}) == {
                "owner": "ada",
                "balance": 15,
                "closed": False,
            }
        with store.read("accounts_view") as view:
            assert view.table("accounts").get("a1") == {"owner": "ada", "balance": 15, "closed": False}

    def test_update_of_a_missing_key_raises_naming_table_and_key(self, writer: Writer) -> None:
        with pytest.raises(DocumentNotFoundError) as raised, writer.transaction() as uow:
            uow.table("accounts").update("nope", {"balance": 1})
        assert (raised.value.table, raised.value.key) == ("accounts", "nope")
        assert "'nope'" in str(raised.value)

    def test_delete_says_whether_a_document_was_there(self, store: ReadModelStore, writer: Writer) -> None:
        self._put(writer, {"a1": {"owner": "ada"}})
        with writer.transaction() as uow:
            assert uow.table("accounts").delete("a1") is True
            assert uow.table("accounts").delete("a1") is False
            assert uow.table("accounts").get("a1") is None
        with store.read("accounts_view") as view:
            assert view.table("accounts").get("a1") is None

    def test_decimals_uuids_and_dates_are_stored_as_strings(
        self, store: ReadModelStore, writer: Writer
    ) -> None:
        ident = uuid.uuid4()
        moment = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
        self._put(
            writer, {"a1": {"amount": Decimal("12.50"), "id": ident, "at": moment, "day": date(2024, 5, 6)}}
        )
        with store.read("accounts_view") as view:
            assert view.table("accounts").get("a1") == {
                "amount": "12.50",
                "id": str(ident),
                "at": moment.isoformat(),
                "day": "2024-05-06",
            }

    def test_a_unit_of_work_reads_its_writes_as_json_and_hands_out_copies(
        self, store: ReadModelStore, writer: Writer
    ) -> None:
        self._put(writer, {"a1": {"owner": "ada", "tags": ["x"]}})
        written = {"amount": Decimal("1.50"), "pair": (1, 2), "nested": {3: "three"}}
        with writer.transaction() as uow:
            accounts = uow.table("accounts")
            accounts.put("a2", written)
            written["amount"] = Decimal(0)
            got = accounts.get("a2")
            assert got == {"amount": "1.50", "pair": [1, 2], "nested": {"3": "three"}}
            assert got is not None
            got["pair"].append(3)
            got["amount"] = "mutated"
            updated = accounts.update("a1", {"balance": Decimal("2")})
            assert updated == {"owner": "ada", "tags": ["x"], "balance": "2"}
            updated["tags"].append("y")
            updated["owner"] = "mutated"
            first = accounts.get("a1")
            assert first is not None
            first["tags"].append("z")
            assert accounts.get("a2") == {"amount": "1.50", "pair": [1, 2], "nested": {"3": "three"}}
            assert accounts.get("a1") == {"owner": "ada", "tags": ["x"], "balance": "2"}
        with store.read("accounts_view") as view:
            assert view.table("accounts").get("a1") == {"owner": "ada", "tags": ["x"], "balance": "2"}
            assert view.table("accounts").get("a2") == {
                "amount": "1.50",
                "pair": [1, 2],
                "nested": {"3": "three"},
            }

    def test_a_document_that_is_not_json_is_rejected_naming_table_and_key(self, writer: Writer) -> None:
        with pytest.raises(InvalidInputError) as raised, writer.transaction() as uow:
            uow.table("accounts").put("a1", {"bad": object()})
        assert "a1" in str(raised.value)
        assert "accounts" in str(raised.value)

    def test_text_no_store_can_hold_is_refused_alike_naming_table_key_and_field(
        self, store: ReadModelStore, writer: Writer
    ) -> None:
        # NUL characters and lone surrogates: PostgreSQL's JSONB refuses them, UTF-8 cannot hold them.
        refused = [
            ({"owner": "Ada\x00Lovelace"}, "'owner'"),
            ({"address": {"lines": ["1 Main St", "flat\x00 2"]}}, "'address.lines[1]'"),
            ({"tags": [{"name": "\ud800"}]}, "'tags[0].name'"),
            ({"bad\x00name": 1}, "'bad\\x00name'"),
            ({"nested": {"\udfff": True}}, "'nested.\\udfff'"),
        ]
        self._put(writer, {"a1": {"owner": "ada"}})
        for document, path in refused:
            for write in ("put", "update"):
                with writer.transaction() as uow:
                    table = uow.table("accounts")
                    with pytest.raises(InvalidInputError) as raised:
                        getattr(table, write)("a1", document)
                message = str(raised.value)
                assert "'accounts'" in message, message
                assert "'a1'" in message, message
                assert f"field {path}" in message, message
                assert "\n" not in message
        for key in ("a\x00b", "\ud800"):
            with pytest.raises(InvalidInputError), writer.transaction() as uow:
                uow.table("accounts").put(key, {"owner": "ada"})
        # Other text is stored as it is, whatever the store.
        accepted = {"owner": "Ada Lovelace \u00e9\u4e2d\U0001f600", "tab\tand\u0001": "\u0001\x7f"}
        self._put(writer, {"a2": accepted})
        with store.read("accounts_view") as view:
            assert view.table("accounts").get("a1") == {"owner": "ada"}
            assert view.table("accounts").get("a2") == accepted

    def test_keys_must_be_non_empty_strings(self, writer: Writer) -> None:
        with pytest.raises(InvalidInputError), writer.transaction() as uow:
            uow.table("accounts").put("", {"x": 1})
        with pytest.raises(InvalidInputError), writer.transaction() as uow:
            uow.table("accounts").get(42)  # type: ignore[arg-type]

    # -- queries --------------------------------------------------------------------------

    def test_find_compares_with_json_types(self, store: ReadModelStore, writer: Writer) -> None:
        self._put(
            writer,
            {
                "int": {"v": 1, "owner": "ada"},
                "float": {"v": 1.0, "owner": "ada"},
                "str": {"v": "1", "owner": "ada"},
                "true": {"v": True, "owner": "bob"},
                "null": {"v": None, "owner": "bob"},
                "missing": {"owner": "bob"},
            },
        )
        with store.read("accounts_view") as view:
            table = view.table("accounts")

            def keys(where: dict[str, Any]) -> list[Any]:
                return sorted(json.dumps(doc.get("v")) for doc in table.find(where))

            assert keys({"v": 1}) == ["1", "1.0"]
            assert keys({"v": "1"}) == ['"1"']
            assert keys({"v": True}) == ["true"]
            assert keys({"v": None}) == ["null", "null"]
            assert keys({"v": 1, "owner": "ada"}) == ["1", "1.0"]
            assert keys({"v": 1, "owner": "bob"}) == []
            assert table.count({"owner": "bob"}) == 3
            assert table.count() == 6

    def test_find_orders_by_a_field_then_by_key(self, store: ReadModelStore, writer: Writer) -> None:
        self._put(
            writer,
            {
                "k1": {"balance": 10, "owner": "b"},
                "k2": {"balance": 2.5, "owner": "B"},
                "k3": {"balance": 10, "owner": "a"},
                "k4": {"owner": "é"},
                "k5": {"balance": -1, "owner": "ab"},
            },
        )
        with store.read("accounts_view") as view:
            table = view.table("accounts")
            by_balance = [d["owner"] for d in table.find(order_by="balance")]
            assert by_balance == ["é", "ab", "B", "b", "a"]
            by_balance_desc = [d["owner"] for d in table.find(order_by="balance", descending=True)]
            assert by_balance_desc == ["b", "a", "B", "ab", "é"]
            assert [d["owner"] for d in table.find(order_by="owner")] == ["B", "a", "ab", "b", "é"]
            assert [d["owner"] for d in table.find(order_by="owner", limit=2)] == ["B", "a"]
            assert table.find(order_by="owner", limit=0) == []
            assert [d["owner"] for d in table.find()] == ["b", "B", "a", "é", "ab"]

    def test_find_pages_with_an_offset_after_ordering_and_filtering(
        self, store: ReadModelStore, writer: Writer
    ) -> None:
        documents = {f"k{n:02}": {"owner": f"o{n:02}", "open": n % 2 == 0} for n in range(1, 12)}
        self._put(writer, documents)
        expected = sorted(str(d["owner"]) for d in documents.values() if d["open"])  # o02 ... o10
        with store.read("accounts_view") as view:
            table = view.table("accounts")
            pages = [
                [d["owner"] for d in table.find({"open": True}, order_by="owner", limit=2, offset=page * 2)]
                for page in range(4)
            ]
            assert pages == [expected[0:2], expected[2:4], expected[4:], []]
            by_key_desc = [d["owner"] for d in table.find(order_by="owner", descending=True, offset=9)]
            assert by_key_desc == ["o02", "o01"]  # an offset without a limit: the rest
            assert table.find(offset=11) == []
            for wrong in (-1, 1.5, True, "2"):
                with pytest.raises(InvalidInputError, match="offset"):
                    table.find(offset=wrong)  # type: ignore[arg-type]
        with writer.transaction() as uow:  # inside a unit of work, buffered writes count too
            uow.table("accounts").put("k00", {"owner": "o00", "open": True})
            assert [
                d["owner"]
                for d in uow.table("accounts").find({"open": True}, order_by="owner", limit=1, offset=1)
            ] == ["o02"]

    def test_where_and_order_by_names_must_be_identifiers(
        self, store: ReadModelStore, writer: Writer
    ) -> None:
        self._put(writer, {"a1": {"owner": "ada"}})
        with store.read("accounts_view") as view:
            with pytest.raises(InvalidNameError):
                view.table("accounts").find({"owner') OR 1=1 --": "x"})
            with pytest.raises(InvalidNameError):
                view.table("accounts").find(order_by="owner; DROP TABLE x")
            with pytest.raises(InvalidInputError):
                view.table("accounts").find({"owner": ["list"]})  # type: ignore[dict-item]
            with pytest.raises(InvalidInputError):
                view.table("accounts").find(limit=-1)

    def test_a_unit_of_work_queries_its_own_writes(self, writer: Writer) -> None:
        self._put(writer, {"a1": {"owner": "ada"}, "a2": {"owner": "ada"}})
        with writer.transaction() as uow:
            table = uow.table("accounts")
            table.put("a3", {"owner": "ada"})
            table.delete("a1")
            table.update("a2", {"owner": "bob"})
            assert table.count({"owner": "ada"}) == 1
            assert [d["owner"] for d in table.find()] == ["bob", "ada"]

    def test_writes_are_invisible_to_readers_until_commit(
        self, store: ReadModelStore, writer: Writer
    ) -> None:
        seen: list[Any] = []
        with writer.transaction() as uow:
            uow.table("accounts").put("a1", {"owner": "ada"})
            uow.table("accounts").count()  # flushed into the open transaction

            def look() -> None:
                with store.read("accounts_view") as view:
                    seen.append(view.table("accounts").get("a1"))

            reader = threading.Thread(target=look)
            reader.start()
            reader.join(10)
        assert seen == [None]
        with store.read("accounts_view") as view:
            assert view.table("accounts").get("a1") == {"owner": "ada"}

    def test_an_exception_rolls_back_writes_and_checkpoint(
        self, store: ReadModelStore, writer: Writer
    ) -> None:
        def fail_midway() -> None:
            with writer.transaction() as uow:
                uow.table("accounts").put("a1", {"owner": "ada"})
                uow.table("accounts").count()
                uow.set_checkpoint(42, 1)
                raise RuntimeError("handler failed")

        with pytest.raises(RuntimeError):
            fail_midway()
        with store.read("accounts_view") as view:
            assert view.table("accounts").get("a1") is None
            assert view.generation.checkpoint is None

    def test_the_checkpoint_commits_with_the_writes(self, store: ReadModelStore, writer: Writer) -> None:
        with writer.transaction() as uow:
            uow.table("accounts").put("a1", {"owner": "ada"})
            uow.set_checkpoint(7, 1)
        with writer.transaction() as uow:
            uow.set_checkpoint(9, 2)
        live = store.describe("accounts_view").live
        assert live is not None
        assert (live.checkpoint, live.events_applied) == (9, 3)

    def test_an_undeclared_table_is_refused(self, store: ReadModelStore, writer: Writer) -> None:
        with pytest.raises(UnknownTableError) as raised, writer.transaction() as uow:
            uow.table("ghosts")
        assert (raised.value.projection, raised.value.table) == ("accounts_view", "ghosts")
        with store.read("accounts_view") as view, pytest.raises(UnknownTableError):
            view.table("ghosts")

    def test_names_that_are_unsafe_in_sql_are_refused(self, store: ReadModelStore) -> None:
        for bad in ['x"; DROP TABLE y; --', "Upper", "a__b", "9lives", "", "x" * 31]:
            with pytest.raises(InvalidNameError):
                store.describe(bad)
        for bad in ['t"', "a b", "a__b", "x" * 21]:
            with pytest.raises(InvalidNameError):
                TableSpec(bad)
        with pytest.raises(InvalidNameError):
            TableSpec("ok", indexes=("no-dash",))

    def test_reading_a_projection_that_never_ran_raises(self, store: ReadModelStore) -> None:
        with pytest.raises(ProjectionNotFoundError), store.read("never_ran"):
            pass
        record = store.describe("never_ran")
        assert (record.live, record.building, record.state) == (None, None, ProjectionState.NEW)

    def test_raw_sql_runs_in_the_transaction_and_the_view(
        self, store: ReadModelStore, writer: Writer
    ) -> None:
        if not self.SUPPORTS_RAW_SQL:
            with writer.transaction() as uow, pytest.raises(UnsupportedOperationError):
                uow.execute("SELECT 1")
            return
        p = self.PARAMETER
        with writer.transaction() as uow:
            uow.table("accounts").put("a1", {"owner": "ada"})
            table = uow.sql_table("accounts")
            assert uow.execute(f"SELECT key FROM {table} WHERE key = {p}", ["a1"]) == [("a1",)]
            uow.execute(f"DELETE FROM {table} WHERE key = {p}", ["a1"])
            assert uow.table("accounts").get("a1") is None
            uow.table("accounts").put("a2", {"owner": "bob"})
        with store.read("accounts_view") as view:
            assert view.execute(f"SELECT count(*) FROM {view.sql_table('accounts')}") == [(1,)]

    # -- generations, leases, parking -----------------------------------------------------

    def test_a_switch_makes_the_building_generation_live_and_drops_the_old(
        self, store: ReadModelStore, writer: Writer
    ) -> None:
        self._put(writer, {"old": {"owner": "ada"}})
        rebuild_lease = store.lease("accounts_view", LeaseRole.REBUILD)
        assert rebuild_lease.try_acquire()
        try:
            building = store.create_generation("accounts_view", 2, _SPECS, lease=rebuild_lease)
            with store.transaction("accounts_view", building.number, lease=rebuild_lease) as uow:
                uow.table("accounts").put("new", {"owner": "bob"})
                uow.set_checkpoint(5, 1)
            with store.read("accounts_view") as view:
                assert view.generation.number == writer.generation.number
                assert view.table("accounts").get("old") == {"owner": "ada"}
            record = store.describe("accounts_view")
            assert record.building is not None
            assert record.building.number == building.number
            store.switch_generation("accounts_view", building.number, lease=rebuild_lease)
        finally:
            rebuild_lease.release()
        with store.read("accounts_view") as view:
            assert (view.generation.number, view.generation.version) == (building.number, 2)
            assert view.table("accounts").find() == [{"owner": "bob"}]
        with pytest.raises(GenerationChangedError), writer.transaction():
            pass
        record = store.describe("accounts_view")
        assert record.building is None

    def test_a_query_that_began_before_a_switch_finishes_on_the_old_generation(
        self, store: ReadModelStore, writer: Writer
    ) -> None:
        self._put(writer, {"old": {"owner": "ada"}})
        rebuild_lease = store.lease("accounts_view", LeaseRole.REBUILD)
        assert rebuild_lease.try_acquire()
        building = store.create_generation("accounts_view", 2, _SPECS, lease=rebuild_lease)
        seen: list[Any] = []
        reading, go_on = threading.Event(), threading.Event()

        def query() -> None:
            with store.read("accounts_view") as view:
                seen.append(view.table("accounts").get("old"))
                reading.set()
                go_on.wait(10)
                seen.append(view.table("accounts").get("old"))

        def switch() -> None:
            store.switch_generation("accounts_view", building.number, lease=rebuild_lease)

        reader, switcher = threading.Thread(target=query), threading.Thread(target=switch)
        try:
            reader.start()
            assert reading.wait(10)
            switcher.start()
            time.sleep(0.2)  # the switch runs (or waits for the query, on PostgreSQL)
            go_on.set()
            reader.join(10)
            switcher.join(10)
        finally:
            go_on.set()
            rebuild_lease.release()
        assert seen == [{"owner": "ada"}, {"owner": "ada"}]
        with store.read("accounts_view") as view:
            assert view.generation.number == building.number
            assert view.table("accounts").get("old") is None

    def test_a_new_building_generation_replaces_an_abandoned_one(
        self, store: ReadModelStore, writer: Writer
    ) -> None:
        lease = store.lease("accounts_view", LeaseRole.REBUILD)
        assert lease.try_acquire()
        try:
            first = store.create_generation("accounts_view", 2, _SPECS, lease=lease)
            second = store.create_generation("accounts_view", 2, _SPECS, lease=lease)
            assert second.number > first.number
            with (
                pytest.raises(GenerationChangedError),
                store.transaction("accounts_view", first.number, lease=lease),
            ):
                pass
            store.drop_generation("accounts_view", second.number, lease=lease)
            assert store.describe("accounts_view").building is None
        finally:
            lease.release()

    def test_a_lease_is_exclusive_until_released(self, store: ReadModelStore) -> None:
        first = store.lease("leased", LeaseRole.RUN)
        second = store.lease("leased", LeaseRole.RUN)
        assert store.lease_held("leased", LeaseRole.RUN) is False
        assert first.try_acquire()
        assert first.held
        assert store.lease_held("leased", LeaseRole.RUN) is True
        assert not second.try_acquire()
        other_role = store.lease("leased", LeaseRole.REBUILD)
        assert other_role.try_acquire()  # roles are independent
        other_role.release()
        first.release()
        first.release()
        assert second.try_acquire()
        assert second.epoch > first.epoch
        second.release()

    def test_a_superseded_lease_cannot_commit(self, store: ReadModelStore) -> None:
        old = store.lease("fenced", LeaseRole.RUN)
        assert old.try_acquire()
        generation = store.create_generation("fenced", 1, _SPECS, lease=old)
        old.release()
        new = store.lease("fenced", LeaseRole.RUN)
        assert new.try_acquire()
        try:
            with (
                pytest.raises(LeaseLostError) as raised,
                store.transaction("fenced", generation.number, lease=old),
            ):
                pass
            assert raised.value.current == new.epoch
            with store.transaction("fenced", generation.number, lease=new) as uow:
                uow.set_checkpoint(1, 0)
        finally:
            new.release()

    def test_parked_events_are_listed_and_marked_for_retry(
        self, store: ReadModelStore, writer: Writer
    ) -> None:
        event = RecordedEvent(
            id=uuid.uuid4(),
            type="Poison",
            data=b'{"x": 1}',
            metadata=b"{}",
            stream="Acc-1",
            revision=3,
            position=17,
            recorded_at=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        )
        with writer.transaction() as uow:
            uow.park(event, "ValueError: bad", 3)
            uow.set_checkpoint(17, 0)
        [parked] = store.parked_events("accounts_view")
        assert parked.to_recorded() == event
        assert (parked.error, parked.attempts, parked.retry_requested) == ("ValueError: bad", 3, False)
        assert (parked.key, parked.segment, parked.held_back) == ("Acc-1", None, False)
        with pytest.raises(ParkedEventNotFoundError):
            store.request_retry("accounts_view", [99])
        assert store.request_retry("accounts_view") == 1
        with writer.transaction() as uow:
            [again] = uow.parked_for_retry()
            uow.parked_failed_again(again.position, "ValueError: still bad", 1)
        [parked] = store.parked_events("accounts_view")
        assert (parked.error, parked.attempts, parked.retry_requested) == ("ValueError: still bad", 4, False)
        with writer.transaction() as uow:
            uow.unpark(17)
        assert store.parked_events("accounts_view") == []

    def test_dropping_a_projection_forgets_it_but_not_while_a_runner_holds_its_lease(
        self, store: ReadModelStore, writer: Writer
    ) -> None:
        from projections.errors import ProjectionRunningError  # noqa: PLC0415 - new with drop_projection

        self._put(writer, {"a1": {"owner": "ada"}})
        with writer.transaction() as uow:
            uow.set_checkpoint(7, 1)
        with pytest.raises(ProjectionRunningError) as raised:
            store.drop_projection("accounts_view")
        assert "accounts_view" in str(raised.value)
        assert store.describe("accounts_view").live is not None  # nothing was dropped
        rebuild_lease = store.lease("accounts_view", LeaseRole.REBUILD)
        assert rebuild_lease.try_acquire()
        store.create_generation("accounts_view", 2, _SPECS, lease=rebuild_lease)
        writer.lease.release()
        with pytest.raises(ProjectionRunningError):
            store.drop_projection("accounts_view")
        rebuild_lease.release()

        assert store.drop_projection("accounts_view") is True
        record = store.describe("accounts_view")
        assert (record.live, record.building, record.state) == (None, None, ProjectionState.NEW)
        assert store.parked_events("accounts_view") == []
        with pytest.raises(ProjectionNotFoundError):
            store.read("accounts_view").__enter__()
        assert store.drop_projection("never_ran") is False
        # The next run starts from scratch: a new first generation, empty, no checkpoint.
        lease = store.lease("accounts_view", LeaseRole.RUN)
        assert lease.try_acquire()
        try:
            fresh = store.create_generation("accounts_view", 1, _SPECS, lease=lease)
            assert (fresh.checkpoint, fresh.events_applied) == (None, 0)
            with store.read("accounts_view") as view:
                assert view.table("accounts").count() == 0
        finally:
            lease.release()

    def test_state_and_last_error_are_recorded(self, store: ReadModelStore) -> None:
        store.set_state("stateful", ProjectionState.LIVE)
        store.set_state("stateful", ProjectionState.FAILED, error="ValueError: boom")
        store.set_state("stateful", ProjectionState.STOPPED)
        record = store.describe("stateful")
        assert record.state is ProjectionState.STOPPED
        assert record.last_error == "ValueError: boom"
        assert record.last_error_at is not None
        assert "stateful" in store.projection_names()

    def test_bad_updates_and_a_re_parked_event_are_handled_alike_everywhere(
        self, store: ReadModelStore, writer: Writer
    ) -> None:
        self._put(writer, {"a1": {"owner": "ada"}})
        for changes in ({"bad": object()}, ["owner", "bob"]):
            with pytest.raises(InvalidInputError) as raised, writer.transaction() as uow:
                uow.table("accounts").update("a1", changes)  # type: ignore[arg-type]
            assert "'a1'" in str(raised.value)
            assert "'accounts'" in str(raised.value)
        event = RecordedEvent(
            id=uuid.uuid4(),
            type="Poison",
            data=b"{}",
            metadata=b"{}",
            stream="Acc-1",
            revision=0,
            position=5,
            recorded_at=datetime(2024, 1, 2, tzinfo=UTC),
        )
        with writer.transaction() as uow:
            uow.park(event, "ValueError: first", 3)
        store.request_retry("accounts_view")
        with writer.transaction() as uow:
            uow.park(event, "ValueError: second", 2)
        [parked] = store.parked_events("accounts_view")
        assert parked.to_recorded() == event
        assert (parked.error, parked.attempts, parked.retry_requested) == ("ValueError: second", 2, False)
        with store.read("accounts_view") as view:
            assert view.table("accounts").get("a1") == {"owner": "ada"}

    # -- segments -------------------------------------------------------------------------

    @staticmethod
    def _segmented(
        store: ReadModelStore, name: str = "split_view", segments: int = 4, role: LeaseRole = LeaseRole.RUN
    ) -> Generation:
        """A generation of ``name`` written by ``segments`` segments (live, or building)."""
        lease = store.lease(name, role)
        assert lease.try_acquire()
        try:
            return store.create_generation(name, 1, _SPECS, lease=lease, segments=segments)
        finally:
            lease.release()

    @staticmethod
    def _segment_leases(store: ReadModelStore, name: str = "split_view", segments: int = 4) -> list[Lease]:
        leases = [store.lease(name, LeaseRole.RUN, segment=segment) for segment in range(segments)]
        assert all(lease.try_acquire() for lease in leases)
        return leases

    def break_lease(
        self, store: ReadModelStore, projection: str, role: LeaseRole, segment: int | None
    ) -> None:
        """Hook: free a lease while its holder still believes it holds it (see :func:`break_lease`)."""
        break_lease(store, projection, role, segment)

    def test_segment_leases_are_exclusive_per_segment_and_independent(self, store: ReadModelStore) -> None:
        first = store.lease("split", LeaseRole.RUN, segment=0)
        assert (first.projection, first.role, first.segment) == ("split", LeaseRole.RUN, 0)
        assert first.try_acquire()
        assert not store.lease("split", LeaseRole.RUN, segment=0).try_acquire()
        # Independent of the whole projection's lease, of other segments and of other roles.
        others = [
            store.lease("split", LeaseRole.RUN),
            store.lease("split", LeaseRole.RUN, segment=1),
            store.lease("split", LeaseRole.REBUILD, segment=0),
            store.lease("split", LeaseRole.WORKER, segment=5),
            store.lease("other_split", LeaseRole.RUN, segment=0),
        ]
        assert all(lease.try_acquire() for lease in others)
        try:
            assert store.lease_held("split", LeaseRole.RUN, segment=0)
            assert store.lease_held("split", LeaseRole.RUN)
            assert not store.lease_held("split", LeaseRole.RUN, segment=2)
            assert store.leases_held("split", LeaseRole.RUN, 4) == {0, 1}
            assert store.leases_held("split", LeaseRole.RUN, 1) == {0}  # only segments below the count
            assert store.leases_held("split", LeaseRole.REBUILD, 4) == {0}
            assert store.leases_held("split", LeaseRole.WORKER, MAX_SEGMENTS) == {5}
            assert store.lease_held("split", LeaseRole.WORKER, segment=5)
            assert store.leases_held("never_leased", LeaseRole.RUN, 4) == set()
        finally:
            for lease in others:
                lease.release()
        assert store.leases_held("split", LeaseRole.RUN, 4) == {0}
        assert store.leases_held("split", LeaseRole.WORKER, MAX_SEGMENTS) == set()
        first.release()
        assert store.leases_held("split", LeaseRole.RUN, 4) == set()
        second = store.lease("split", LeaseRole.RUN, segment=0)
        assert second.try_acquire()
        assert second.epoch > first.epoch
        second.release()

    def test_segment_numbers_and_counts_out_of_range_are_refused(self, store: ReadModelStore) -> None:
        for bad in (-1, MAX_SEGMENTS, True, "1", 1.0):
            with pytest.raises(InvalidInputError):
                store.lease("split", LeaseRole.RUN, segment=bad)  # type: ignore[arg-type]
            with pytest.raises(InvalidInputError):
                store.lease_held("split", LeaseRole.RUN, segment=bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError):
            store.lease("split", LeaseRole.WORKER)  # a worker lease is a slot: it needs its number
        for bad in (0, -1, MAX_SEGMENTS + 1, True, 2.0):
            with pytest.raises(InvalidInputError):
                store.leases_held("split", LeaseRole.RUN, bad)  # type: ignore[arg-type]
        lease = store.lease("split", LeaseRole.RUN)
        assert lease.try_acquire()
        try:
            for bad in (0, MAX_SEGMENTS + 1, True):
                with pytest.raises(InvalidInputError):
                    store.create_generation("split", 1, _SPECS, lease=lease, segments=bad)
            assert store.describe("split").live is None
        finally:
            lease.release()

    def test_a_generation_is_created_under_the_whole_projections_lease_only(
        self, store: ReadModelStore
    ) -> None:
        for role in (LeaseRole.RUN, LeaseRole.REBUILD):
            lease = store.lease("split", role, segment=0)
            assert lease.try_acquire()
            try:
                with pytest.raises(ValueError, match="whole projection"):
                    store.create_generation("split", 1, _SPECS, lease=lease, segments=4)
            finally:
                lease.release()
        record = store.describe("split")
        assert (record.live, record.building) == (None, None)

    def test_a_segment_moves_only_its_own_checkpoint(self, store: ReadModelStore) -> None:
        generation = self._segmented(store)
        assert (generation.segments, generation.checkpoint, generation.events_applied) == (4, None, 0)
        assert [
            (p.segment, p.checkpoint, p.events_applied, p.caught_up) for p in generation.segment_progress
        ] == [(segment, None, 0, False) for segment in range(4)]
        leases = self._segment_leases(store)
        try:
            with store.transaction("split_view", generation.number, lease=leases[0]) as uow:
                uow.table("accounts").put("a0", {"owner": "ada"})
                uow.set_checkpoint(10, 2)
            live = store.describe("split_view").live
            assert live is not None
            assert [(p.checkpoint, p.events_applied) for p in live.segment_progress] == [
                (10, 2),
                (None, 0),
                (None, 0),
                (None, 0),
            ]
            # The lowest segment checkpoint: none while a segment has none.
            assert (live.checkpoint, live.events_applied) == (None, 2)
            for segment, position in ((1, 20), (2, 5), (3, 30)):
                with store.transaction("split_view", generation.number, lease=leases[segment]) as uow:
                    uow.table("accounts").put(f"a{segment}", {"owner": "bob"})
                    uow.set_checkpoint(position, 1)
            with store.transaction("split_view", generation.number, lease=leases[0]) as uow:
                uow.set_checkpoint(40, 0)
            live = store.describe("split_view").live
            assert live is not None
            assert [(p.checkpoint, p.events_applied) for p in live.segment_progress] == [
                (40, 2),
                (20, 1),
                (5, 1),
                (30, 1),
            ]
            assert (live.checkpoint, live.events_applied) == (5, 5)
            with store.read("split_view") as view:
                assert view.table("accounts").count() == 4  # the documents are shared
        finally:
            for lease in leases:
                lease.release()

    def test_a_read_view_and_a_transaction_see_the_segmented_generations_progress(
        self, store: ReadModelStore
    ) -> None:
        generation = self._segmented(store)
        leases = self._segment_leases(store)
        try:
            for segment, position in enumerate((8, 6, 9, 7)):
                with store.transaction("split_view", generation.number, lease=leases[segment]) as uow:
                    uow.set_checkpoint(position, 1)
            with store.transaction("split_view", generation.number, lease=leases[0]) as uow:
                seen = uow.generation
            assert (seen.checkpoint, seen.events_applied) == (6, 4)
            assert [p.checkpoint for p in seen.segment_progress] == [8, 6, 9, 7]
            with store.read("split_view") as view:
                assert (view.generation.checkpoint, view.generation.events_applied) == (6, 4)
                assert [p.checkpoint for p in view.generation.segment_progress] == [8, 6, 9, 7]
        finally:
            for lease in leases:
                lease.release()

    def test_a_segment_marks_itself_caught_up(self, store: ReadModelStore) -> None:
        building = self._segmented(store, role=LeaseRole.REBUILD)
        lease = store.lease("split_view", LeaseRole.REBUILD, segment=2)
        assert lease.try_acquire()
        try:
            with store.transaction("split_view", building.number, lease=lease) as uow:
                uow.mark_caught_up()
        finally:
            lease.release()
        record = store.describe("split_view")
        assert record.building is not None
        assert [p.caught_up for p in record.building.segment_progress] == [False, False, True, False]
        # Who took each segment's lease for the building generation's role.
        assert [p.owner for p in record.building.segment_progress] == [
            None,
            None,
            f"{socket.gethostname()}:{os.getpid()}",
            None,
        ]

    def test_a_segment_the_generation_does_not_have_is_refused(self, store: ReadModelStore) -> None:
        generation = self._segmented(store, segments=2)
        beyond = store.lease("split_view", LeaseRole.RUN, segment=2)
        assert beyond.try_acquire()
        try:
            with (
                pytest.raises(GenerationChangedError),
                store.transaction("split_view", generation.number, lease=beyond),
            ):
                pass
        finally:
            beyond.release()

    def test_a_segment_lease_on_an_unsegmented_generation_is_refused(self, store: ReadModelStore) -> None:
        unsegmented = self._segmented(store, name="whole_view", segments=1)
        assert (unsegmented.segments, unsegmented.segment_progress) == (1, ())
        first = store.lease("whole_view", LeaseRole.RUN, segment=0)
        assert first.try_acquire()
        try:
            with (
                pytest.raises(GenerationChangedError),
                store.transaction("whole_view", unsegmented.number, lease=first),
            ):
                pass
        finally:
            first.release()

    def test_a_superseded_segment_lease_cannot_commit(self, store: ReadModelStore) -> None:
        generation = self._segmented(store)
        leases = self._segment_leases(store)
        old, other = leases[:2]
        with store.transaction("split_view", generation.number, lease=old) as uow:
            uow.table("accounts").put("before", {"owner": "ada"})
            uow.set_checkpoint(3, 1)
        self.break_lease(store, "split_view", LeaseRole.RUN, 0)
        new = store.lease("split_view", LeaseRole.RUN, segment=0)
        deadline = time.monotonic() + 10
        while not new.try_acquire():
            assert time.monotonic() < deadline, "the broken lease never became free"
            time.sleep(0.01)
        try:
            assert new.epoch > old.epoch

            def write_with_the_old_lease() -> None:
                with store.transaction("split_view", generation.number, lease=old) as uow:
                    uow.table("accounts").put("after", {"owner": "mallory"})
                    uow.set_checkpoint(9, 1)

            with pytest.raises(LeaseLostError) as raised:
                write_with_the_old_lease()
            assert raised.value.current == new.epoch
            live = store.describe("split_view").live
            assert live is not None
            assert (live.segment_progress[0].checkpoint, live.segment_progress[0].events_applied) == (3, 1)
            with store.read("split_view") as view:
                assert view.table("accounts").get("after") is None
            # The new holder commits, and so does another segment's untouched lease.
            for lease in (new, other):
                with store.transaction("split_view", generation.number, lease=lease) as uow:
                    uow.set_checkpoint(12, 0)
        finally:
            new.release()
            for lease in leases:
                lease.release()
        live = store.describe("split_view").live
        assert live is not None
        assert [p.checkpoint for p in live.segment_progress[:2]] == [12, 12]

    def test_the_lease_owner_shows_in_the_segments_progress(self, store: ReadModelStore) -> None:
        self._segmented(store)
        lease = store.lease("split_view", LeaseRole.RUN, segment=1)
        assert lease.try_acquire()
        lease.release()  # the owner is who took it last, held or not
        live = store.describe("split_view").live
        assert live is not None
        assert [p.owner for p in live.segment_progress] == [
            None,
            f"{socket.gethostname()}:{os.getpid()}",
            None,
            None,
        ]

    def test_parked_events_carry_their_key_and_segment_and_retries_mark_whole_keys(
        self, store: ReadModelStore
    ) -> None:
        generation = self._segmented(store)
        leases = self._segment_leases(store)
        try:
            with store.transaction("split_view", generation.number, lease=leases[0]) as uow:
                uow.park(_recorded("Acc-1", 0, 10), "ValueError: bad", 3, key="k1")
                uow.park(_recorded("Acc-2", 0, 11), "held back", 0, held_back=True)  # key: the stream
                uow.park(_recorded("Acc-3", 0, 12), "held back", 0, key="k1", held_back=True)
            with store.transaction("split_view", generation.number, lease=leases[1]) as uow:
                uow.park(_recorded("Acc-4", 0, 13), "ValueError: bad", 3, key="k2")
                uow.park(_recorded("Acc-5", 0, 14), "ValueError: bad", 3, key="k1")  # k1 of segment 1
            parked = store.parked_events("split_view")
            assert [(p.position, p.key, p.segment, p.held_back, p.attempts) for p in parked] == [
                (10, "k1", 0, False, 3),
                (11, "Acc-2", 0, True, 0),
                (12, "k1", 0, True, 0),
                (13, "k2", 1, False, 3),
                (14, "k1", 1, False, 3),
            ]
            with store.transaction("split_view", generation.number, lease=leases[0]) as uow:
                assert uow.parked_keys() == {"k1", "Acc-2"}
            with store.transaction("split_view", generation.number, lease=leases[1]) as uow:
                assert uow.parked_keys() == {"k2", "k1"}
            with store.transaction("split_view", generation.number, lease=leases[2]) as uow:
                assert uow.parked_keys() == set()
            # Held back, it stays so until it is attempted.
            with store.transaction("split_view", generation.number, lease=leases[0]) as uow:
                uow.parked_failed_again(11, "held back again", 0)
            [held] = [p for p in store.parked_events("split_view") if p.position == 11]
            assert (held.held_back, held.attempts, held.error) == (True, 0, "held back again")
            with store.transaction("split_view", generation.number, lease=leases[0]) as uow:
                uow.parked_failed_again(11, "ValueError: tried", 1)
            [tried] = [p for p in store.parked_events("split_view") if p.position == 11]
            assert (tried.held_back, tried.attempts, tried.error) == (False, 1, "ValueError: tried")
            # A position marks its key's group in its segment: 10 and 12, not segment 1's k1.
            assert store.request_retry("split_view", [12]) == 2
            marked = {p.position for p in store.parked_events("split_view") if p.retry_requested}
            assert marked == {10, 12}
            with store.transaction("split_view", generation.number, lease=leases[0]) as uow:
                assert [p.position for p in uow.parked_for_retry()] == [10, 12]
            with store.transaction("split_view", generation.number, lease=leases[1]) as uow:
                assert uow.parked_for_retry() == []
            # An unknown key marks nothing, not even the known ones asked for with it.
            with pytest.raises(ParkedEventNotFoundError) as raised:
                store.request_retry("split_view", [13], keys=["nope"])
            assert raised.value.key == "nope"
            assert "'nope'" in str(raised.value)
            assert "split_view" in str(raised.value)
            assert {p.position for p in store.parked_events("split_view") if p.retry_requested} == {10, 12}
            assert store.request_retry("split_view", keys=["k2"]) == 1
            assert store.request_retry("split_view", keys=["k1"]) == 3  # every segment's k1
            marked = {p.position for p in store.parked_events("split_view") if p.retry_requested}
            assert marked == {10, 12, 13, 14}
        finally:
            for lease in leases:
                lease.release()

    def test_dropping_a_projection_is_refused_while_a_segment_or_worker_lease_is_held(
        self, store: ReadModelStore
    ) -> None:
        self._segmented(store)
        for role, segment in ((LeaseRole.RUN, 3), (LeaseRole.REBUILD, 1), (LeaseRole.WORKER, 0)):
            lease = store.lease("split_view", role, segment=segment)
            assert lease.try_acquire()
            try:
                with pytest.raises(ProjectionRunningError) as raised:
                    store.drop_projection("split_view")
                assert "split_view" in str(raised.value)
                assert store.describe("split_view").live is not None
            finally:
                lease.release()
        assert store.drop_projection("split_view") is True
        assert store.describe("split_view").live is None

    def test_a_database_of_the_previous_schema_is_upgraded_keeping_its_parked_events(
        self, read_model_store_factory: ReadModelStoreFactory, store: ReadModelStore, writer: Writer
    ) -> None:
        if not self.SUPPORTS_RAW_SQL:
            pytest.skip("the memory store keeps no schema between openings")
        event = _recorded("Acc-1", 2, 17)
        with writer.transaction() as uow:
            uow.table("accounts").put("a1", {"owner": "ada"})
            uow.park(event, "ValueError: bad", 3)
            uow.set_checkpoint(17, 1)
            schema = uow.sql_table("accounts").rpartition(".")[0]
        prefix = f"{schema}." if schema else ""
        # Back to the previous release's bookkeeping: no segment tables, no segment columns.
        with writer.transaction() as uow:
            uow.execute(f"DROP TABLE {prefix}rm_segments")
            uow.execute(f"DROP TABLE {prefix}rm_leases")
            for column in ("key", "segment", "held_back"):
                uow.execute(f"ALTER TABLE {prefix}rm_parked DROP COLUMN {column}")
            uow.execute(f"ALTER TABLE {prefix}rm_generations DROP COLUMN segments")
        store.close()
        for _ in range(2):  # upgrading is idempotent
            reopened = read_model_store_factory()
            try:
                [parked] = reopened.parked_events("accounts_view")
                assert parked.to_recorded() == event
                # Parked before keys existed: under the default key, its stream.
                assert (parked.key, parked.segment, parked.held_back) == ("Acc-1", None, False)
                assert (parked.error, parked.attempts) == ("ValueError: bad", 3)
                live = reopened.describe("accounts_view").live
                assert live is not None
                assert (live.segments, live.segment_progress, live.checkpoint) == (1, (), 17)
                with reopened.read("accounts_view") as view:
                    assert view.table("accounts").get("a1") == {"owner": "ada"}
            finally:
                reopened.close()
        reopened = read_model_store_factory()
        try:
            assert reopened.request_retry("accounts_view", keys=["Acc-1"]) == 1
            # And segmented generations work on the upgraded database.
            generation = self._segmented(reopened)
            lease = reopened.lease("split_view", LeaseRole.RUN, segment=3)
            assert lease.try_acquire()
            try:
                with reopened.transaction("split_view", generation.number, lease=lease) as uow:
                    uow.set_checkpoint(5, 1)
            finally:
                lease.release()
            live = reopened.describe("split_view").live
            assert live is not None
            assert live.segment_progress[3].checkpoint == 5
        finally:
            reopened.close()


# --------------------------------------------------------------------------- the runner contract


class ProjectionRunnerContract:
    """The runner's promises, on one read model store. See the module docstring."""

    #: Whether the event store reports a checkpoint past trailing filtered-out events when a
    #: subscription catches up (EventStoreDB only sends them every so many records).
    CHECKPOINT_AT_CATCH_UP: ClassVar[bool] = True

    @pytest.fixture
    def read_model_store_factory(self) -> ReadModelStoreFactory:
        raise NotImplementedError("subclasses provide read_model_store_factory")

    @pytest.fixture
    def store(self, read_model_store_factory: ReadModelStoreFactory) -> Iterator[ReadModelStore]:
        store = read_model_store_factory()
        yield store
        store.close()

    @pytest.fixture
    def event_store(self) -> Iterator[EventStore]:
        events = InMemoryEventStore()
        yield events
        events.close()

    @pytest.fixture
    def event_type(self) -> str:
        return _unique_type()

    def runner(
        self, projection: Projection, events: EventStore, store: ReadModelStore, **options: Any
    ) -> ProjectionRunner:
        options.setdefault("batch_delay", 0.01)
        options.setdefault("lease_poll_interval", 0.02)
        options.setdefault("retry_check_interval", 0.02)
        options.setdefault("rebalance_interval", 0.1)
        return ProjectionRunner(projection, events, store, **options)

    @staticmethod
    def counts(store: ReadModelStore, name: str = "tally") -> dict[str, int]:
        """Events counted per stream; fails if any event was applied twice."""
        with store.read(name) as view:
            applied = view.table("applied").find()
            assert all(doc["times"] == 1 for doc in applied), "an event was applied twice"
            counts: dict[str, int] = {}
            for stream in sorted({doc["stream"] for doc in applied}):
                row = view.table("streams").get(stream)
                assert row is not None
                counts[stream] = row["count"]
            return counts

    # -- applying -------------------------------------------------------------------------

    def test_every_handled_event_is_applied_once(
        self, event_store: EventStore, store: ReadModelStore, event_type: str
    ) -> None:
        a, b = _stream(), _stream()
        append_tallied(event_store, a, 7, event_type)
        append_tallied(event_store, b, 5, event_type)
        assert self.runner(Tally(event_type), event_store, store, batch_size=3).run(until_caught_up=True) is (
            RunOutcome.CAUGHT_UP
        )
        assert self.counts(store) == {a: 7, b: 5}

    def test_unhandled_events_are_filtered_out_but_the_checkpoint_passes_them(
        self, event_store: EventStore, store: ReadModelStore, event_type: str
    ) -> None:
        stream = _stream()
        append_tallied(event_store, stream, 2, event_type)
        last = append_tallied(event_store, _stream(), 3, "SomethingElse")
        self.runner(Tally(event_type), event_store, store).run(until_caught_up=True)
        assert self.counts(store) == {stream: 2}
        live = store.describe("tally").live
        assert live is not None
        assert live.events_applied == 2
        assert live.checkpoint is not None
        if self.CHECKPOINT_AT_CATCH_UP:
            assert live.checkpoint == last
        else:
            assert live.checkpoint < last

    def test_a_new_runner_resumes_from_the_checkpoint(
        self, event_store: EventStore, store: ReadModelStore, event_type: str
    ) -> None:
        stream = _stream()
        append_tallied(event_store, stream, 4, event_type)
        self.runner(Tally(event_type), event_store, store).run(until_caught_up=True)
        append_tallied(event_store, stream, 3, event_type)
        self.runner(Tally(event_type), event_store, store).run(until_caught_up=True)
        assert self.counts(store) == {stream: 7}

    def test_batches_hold_at_most_batch_size_events(
        self, event_store: EventStore, store: ReadModelStore, event_type: str
    ) -> None:
        from structlog.testing import capture_logs  # noqa: PLC0415 - test-only

        append_tallied(event_store, _stream(), 25, event_type)
        with capture_logs() as logs:
            runner = self.runner(Tally(event_type), event_store, store, batch_size=10, batch_delay=60)
            runner.run(until_caught_up=True)
        sizes = [entry["events"] for entry in logs if entry["event"] == "projection.batch_committed"]
        assert sizes == [10, 10, 5]

    def test_a_started_runner_follows_live_events_and_wait_for_sees_them(
        self, event_store: EventStore, store: ReadModelStore, event_type: str
    ) -> None:
        stream = _stream()
        runner = self.runner(Tally(event_type), event_store, store, batch_size=1000, batch_delay=0.02)
        runner.start()
        try:
            for count in (1, 2, 3):
                position = append_tallied(event_store, stream, 1, event_type)
                runner.wait_for(position, timeout=10)
                assert self.counts(store) == {stream: count}
            ignored = append_tallied(event_store, _stream(), 1, "Unrelated")
            runner.wait_for(ignored, timeout=10)
        finally:
            runner.stop()
            runner.join(10)
        assert store.describe("tally").state is ProjectionState.STOPPED
        assert not store.lease_held("tally", LeaseRole.RUN)

    def test_a_lone_live_event_commits_without_waiting_for_the_batch_delay(
        self, event_store: EventStore, store: ReadModelStore, event_type: str
    ) -> None:
        stream = _stream()
        caught_up = append_tallied(event_store, stream, 3, event_type)
        runner = self.runner(Tally(event_type), event_store, store, batch_size=1000, batch_delay=60)
        runner.start()
        try:
            runner.wait_for(caught_up, timeout=10)
            for count in (4, 5):
                position = append_tallied(event_store, stream, 1, event_type)
                runner.wait_for(position, timeout=10)
                assert self.counts(store) == {stream: count}
        finally:
            runner.stop()
            runner.join(10)

    def test_wait_for_times_out_when_nobody_runs_the_projection(
        self, event_store: EventStore, store: ReadModelStore, event_type: str
    ) -> None:
        self.runner(Tally(event_type), event_store, store).run(until_caught_up=True)
        position = append_tallied(event_store, _stream(), 1, event_type)
        with pytest.raises(WaitTimeoutError) as raised:
            wait_for(Tally(event_type), event_store, store, position, timeout=0.1)
        assert isinstance(raised.value, TimeoutError)
        assert raised.value.position == position

    # -- failures -------------------------------------------------------------------------

    def test_an_event_that_keeps_failing_stops_the_runner_naming_the_event(
        self, event_store: EventStore, store: ReadModelStore, event_type: str
    ) -> None:
        stream = _stream()
        append_tallied(event_store, stream, 3, event_type)
        bad_position = append_tallied(event_store, stream, 1, event_type)
        append_tallied(event_store, stream, 2, event_type)
        attempts: list[int] = []

        def poison(event: RecordedEvent) -> bool:
            if event.position == bad_position:
                attempts.append(1)
                return True
            return False

        runner = self.runner(Tally(event_type, poison=poison), event_store, store)
        with pytest.raises(ProjectionFailedError) as raised:
            runner.run(until_caught_up=True)
        error = raised.value
        assert (error.projection, error.event_type, error.stream, error.revision, error.position) == (
            "tally",
            event_type,
            stream,
            3,
            bad_position,
        )
        assert error.attempts == len(attempts) == 3
        assert isinstance(error.__cause__, ValueError)
        for part in ("tally", event_type, stream, "revision 3", f"position {bad_position}"):
            assert part in str(error)
        assert self.counts(store) == {stream: 3}
        record = store.describe("tally")
        assert record.live is not None
        assert record.live.checkpoint is not None
        assert record.live.checkpoint < bad_position
        assert record.state is ProjectionState.FAILED, record.state
        assert record.last_error is not None
        assert stream in record.last_error
        # After the fix, a restart applies the event and the rest.
        self.runner(Tally(event_type), event_store, store).run(until_caught_up=True)
        assert self.counts(store) == {stream: 6}

    def test_a_document_no_store_can_hold_fails_its_own_event_and_stops_naming_it(
        self, event_store: EventStore, store: ReadModelStore, event_type: str
    ) -> None:
        stream = _stream()
        append_tallied(event_store, stream, 3, event_type)
        bad = append_tallied(event_store, stream, 1, event_type)
        append_tallied(event_store, stream, 2, event_type)
        projection = UnstorableTally(event_type, unstorable=lambda e: e.position == bad)
        runner = self.runner(projection, event_store, store, batch_size=100)
        with pytest.raises(ProjectionFailedError) as raised:
            runner.run(until_caught_up=True)
        error = raised.value
        assert (error.projection, error.event_type, error.stream, error.revision, error.position) == (
            "tally",
            event_type,
            stream,
            3,
            bad,
        )
        assert error.attempts == 3  # retried like any failing event
        assert isinstance(error.__cause__, InvalidInputError)
        assert "'owner'" in str(error)
        assert self.counts(store) == {stream: 3}  # the events before it were applied
        live = store.describe("tally").live
        assert live is not None
        assert live.checkpoint is not None
        assert live.checkpoint < bad

    def test_a_document_no_store_can_hold_is_parked_and_the_rest_of_its_batch_applied(
        self, event_store: EventStore, store: ReadModelStore, event_type: str
    ) -> None:
        stream, other = _stream(), _stream()
        append_tallied(event_store, stream, 2, event_type)
        bad = append_tallied(event_store, other, 1, event_type)
        last = append_tallied(event_store, stream, 3, event_type)
        projection = ParkingUnstorableTally(event_type, unstorable=lambda e: e.position == bad)
        self.runner(projection, event_store, store, batch_size=100).run(until_caught_up=True)
        [parked] = store.parked_events("tally")
        assert (parked.position, parked.stream, parked.attempts) == (bad, other, 3)
        assert "InvalidInputError" in parked.error
        assert self.counts(store) == {stream: 5}
        live = store.describe("tally").live
        assert live is not None
        assert live.checkpoint is not None
        assert live.checkpoint >= last

    def test_wait_for_raises_the_failure_of_a_failed_runner_at_once(
        self, event_store: EventStore, store: ReadModelStore, event_type: str
    ) -> None:
        stream = _stream()
        bad = append_tallied(event_store, stream, 1, event_type)
        projection = Tally(event_type, poison=lambda e: e.position == bad)
        runner = self.runner(projection, event_store, store)
        runner.start()
        started = time.monotonic()
        with pytest.raises(ProjectionFailedError) as raised:
            runner.wait_for(bad, timeout=30)
        assert time.monotonic() - started < 10
        assert raised.value.position == bad
        with pytest.raises(ProjectionFailedError):
            runner.join(10)
        # From any process: the state the runner recorded, with its error.
        from projections.errors import ProjectionHaltedError  # noqa: PLC0415 - new with this fix

        started = time.monotonic()
        with pytest.raises(ProjectionHaltedError) as halted:
            wait_for(projection, event_store, store, bad, timeout=30)
        assert time.monotonic() - started < 5
        assert halted.value.projection == "tally"
        assert halted.value.error is not None
        assert stream in halted.value.error
        assert stream in str(halted.value)

    def test_an_event_that_fails_then_succeeds_is_applied_once(
        self, event_store: EventStore, store: ReadModelStore, event_type: str
    ) -> None:
        stream = _stream()
        append_tallied(event_store, stream, 6, event_type)
        failures = {"left": 2}

        def flaky(event: RecordedEvent) -> bool:
            if event.revision == 2 and failures["left"]:
                failures["left"] -= 1
                return True
            return False

        self.runner(Tally(event_type, poison=flaky), event_store, store, batch_size=100).run(
            until_caught_up=True
        )
        assert failures["left"] == 0
        assert self.counts(store) == {stream: 6}

    def test_the_park_policy_parks_the_event_and_its_streams_later_events_and_goes_on(
        self, event_store: EventStore, store: ReadModelStore, event_type: str
    ) -> None:
        stream, other = _stream(), _stream()
        append_tallied(event_store, stream, 2, event_type)
        bad = append_tallied(event_store, stream, 1, event_type)
        append_tallied(event_store, other, 1, event_type)
        append_tallied(event_store, stream, 2, event_type)
        append_tallied(event_store, other, 2, event_type)
        fixed = {"yes": False}
        projection = ParkingTally(event_type, poison=lambda e: e.position == bad and not fixed["yes"])
        runner = self.runner(projection, event_store, store)
        runner.run(until_caught_up=True)
        # The other stream goes on; the bad event's later ones wait behind it (ordered parking).
        assert self.counts(store) == {stream: 2, other: 3}
        first, *behind = store.parked_events("tally")
        assert (first.position, first.stream, first.revision, first.attempts) == (bad, stream, 2, 3)
        assert (first.key, first.held_back) == (stream, False)
        assert "poisoned" in first.error
        assert [(p.revision, p.key, p.held_back, p.attempts) for p in behind] == [
            (3, stream, True, 0),
            (4, stream, True, 0),
        ]
        assert all("held back" in p.error for p in behind)
        status = projection_status(projection, event_store, store)
        assert status.parked == 3
        assert status.last_error is not None
        assert "poisoned" in status.last_error
        assert runner.retry_parked([bad]) == 0  # still failing: all stay parked, in order
        first, *behind = store.parked_events("tally")
        assert (first.attempts, first.retry_requested, first.held_back) == (4, False, False)
        assert [(p.held_back, p.retry_requested, p.attempts) for p in behind] == [(True, False, 0)] * 2
        fixed["yes"] = True
        assert runner.retry_parked(keys=[stream]) == 3
        assert store.parked_events("tally") == []
        assert self.counts(store) == {stream: 5, other: 3}
        with store.read("tally") as view:
            assert all(doc["in_order"] for doc in view.table("streams").find())
        # Nothing is parked any more: the stream's next events are applied at once.
        append_tallied(event_store, stream, 1, event_type)
        runner.run(until_caught_up=True)
        assert self.counts(store) == {stream: 6, other: 3}

    def test_a_running_runner_retries_parked_events_on_request(
        self, event_store: EventStore, store: ReadModelStore, event_type: str
    ) -> None:
        stream = _stream()
        bad = append_tallied(event_store, stream, 1, event_type)
        fixed = {"yes": False}
        projection = ParkingTally(event_type, poison=lambda e: e.position == bad and not fixed["yes"])
        runner = self.runner(projection, event_store, store)
        runner.start()
        try:
            runner.wait_for(bad, timeout=10)
            assert len(store.parked_events("tally")) == 1
            fixed["yes"] = True
            assert runner.retry_parked(timeout=10) == 1
            assert self.counts(store) == {stream: 1}
        finally:
            runner.stop()
            runner.join(10)

    # -- status ---------------------------------------------------------------------------

    def test_status_reports_checkpoint_head_lag_and_state(
        self, event_store: EventStore, store: ReadModelStore, event_type: str
    ) -> None:
        projection = Tally(event_type)
        self.runner(projection, event_store, store).run(until_caught_up=True)
        stream = _stream()
        position = append_tallied(event_store, stream, 4, event_type)
        oldest = next(iter(event_store.read_stream(stream))).recorded_at
        asked = datetime.now(UTC)
        status = projection_status(projection, event_store, store)
        answered = datetime.now(UTC)
        assert status.head_position == event_store.head_position() >= position
        assert status.lag_events == 4
        assert not status.lag_capped
        # How long the oldest unapplied event has waited, as seen while the status was taken.
        assert (asked - oldest).total_seconds() <= status.lag_seconds <= (answered - oldest).total_seconds()
        assert status.state is ProjectionState.STOPPED
        assert status.running is False
        assert (status.parked, status.last_error) == (0, None)
        capped = projection_status(projection, event_store, store, count_limit=2)
        assert (capped.lag_events, capped.lag_capped) == (2, True)
        self.runner(projection, event_store, store).run(until_caught_up=True)
        status = projection_status(projection, event_store, store)
        assert (status.checkpoint, status.lag_events, status.lag_seconds) == (position, 0, 0.0)

    # -- leases ---------------------------------------------------------------------------

    def test_a_second_runner_waits_for_the_lease_and_takes_over(
        self, event_store: EventStore, store: ReadModelStore, event_type: str
    ) -> None:
        stream = _stream()
        append_tallied(event_store, stream, 2, event_type)
        first = self.runner(Tally(event_type), event_store, store)
        second = self.runner(Tally(event_type), event_store, store)
        first.start()
        try:
            first.wait_for(event_store.head_position(), timeout=10)
            second.start()
            deadline = time.monotonic() + 10
            while store.describe("tally").state is not ProjectionState.WAITING_FOR_LEASE:
                assert time.monotonic() < deadline, "the second runner never waited"
                time.sleep(0.01)
            first.stop()
            first.join(10)
            position = append_tallied(event_store, stream, 1, event_type)
            second.wait_for(position, timeout=10)
            assert self.counts(store) == {stream: 3}
        finally:
            first.stop()
            second.stop()
            first.join(10)
            second.join(10)

    # -- rebuilds -------------------------------------------------------------------------

    def test_a_rebuild_builds_beside_the_live_generation_and_switches(
        self, event_store: EventStore, store: ReadModelStore, event_type: str
    ) -> None:
        stream = _stream()
        append_tallied(event_store, stream, 30, event_type)
        self.runner(Tally(event_type), event_store, store).run(until_caught_up=True)
        before = read_model_snapshot(store, "tally", ("streams", "applied"))
        live = store.describe("tally").live
        assert live is not None
        served: list[int] = []
        progress: list[Progress] = []

        def watch(update: Progress) -> None:
            progress.append(update)
            with store.read("tally") as view:  # the live generation keeps serving
                served.append(view.generation.number)
                assert view.table("streams").get(stream) == before["streams"][0]

        report = rebuild(Tally(event_type), event_store, store, progress=watch, batch_size=7)
        assert report is not None
        assert report.switched
        assert report.generation != live.number
        assert report.events == 30
        assert set(served) == {live.number}
        done = [p.done for p in progress]
        assert done == sorted(done)
        assert done[-1] == 30
        assert all(later - earlier <= 7 for earlier, later in zip([0, *done], done, strict=False))
        assert all(p.total == 30 for p in progress)
        assert progress[-1].fraction == 1.0
        assert progress[-1].rate > 0
        assert progress[-1].eta == 0
        after = store.describe("tally").live
        assert after is not None
        assert after.number == report.generation
        assert read_model_snapshot(store, "tally", ("streams", "applied")) == before

    def test_bumping_the_version_rebuilds_with_the_new_logic(
        self, event_store: EventStore, store: ReadModelStore, event_type: str
    ) -> None:
        stream = _stream()
        append_tallied(event_store, stream, 5, event_type)
        self.runner(Tally(event_type), event_store, store).run(until_caught_up=True)
        old = store.describe("tally").live
        assert old is not None
        self.runner(TallyV2(event_type), event_store, store).run(until_caught_up=True)
        new = store.describe("tally").live
        assert new is not None
        assert (new.version, new.checkpoint) == (2, old.checkpoint)
        assert new.number != old.number
        with store.read("tally") as view:
            assert view.table("streams").get(stream) == {
                "count": 5,
                "last_revision": 4,
                "version": 2,
                "in_order": True,
            }
        with pytest.raises(ProjectionVersionError) as raised:
            self.runner(Tally(event_type), event_store, store).run(until_caught_up=True)
        assert (raised.value.code_version, raised.value.live_version) == (1, 2)

    def test_an_interrupted_rebuild_resumes_where_it_stopped(
        self, event_store: EventStore, store: ReadModelStore, event_type: str
    ) -> None:
        stream = _stream()
        append_tallied(event_store, stream, 20, event_type)
        self.runner(Tally(event_type), event_store, store).run(until_caught_up=True)
        before = read_model_snapshot(store, "tally", ("streams", "applied"))
        interrupted = self.runner(Tally(event_type), event_store, store, batch_size=5)

        def stop_after_first_batch(update: Progress) -> None:
            interrupted.stop()

        assert (
            rebuild(
                Tally(event_type), event_store, store, progress=stop_after_first_batch, runner=interrupted
            )
            is None
        )
        building = store.describe("tally").building
        assert building is not None
        first = building.events_applied
        assert 0 < first <= 5
        progress: list[Progress] = []
        report = rebuild(Tally(event_type), event_store, store, progress=progress.append, batch_size=5)
        assert report is not None
        assert report.resumed
        assert (report.generation, report.events) == (building.number, 20 - first)
        assert progress[0].done > first
        assert progress[-1].done == progress[-1].total == 20
        assert read_model_snapshot(store, "tally", ("streams", "applied")) == before

    def test_a_running_runner_moves_to_the_rebuilt_generation(
        self, event_store: EventStore, store: ReadModelStore, event_type: str
    ) -> None:
        stream = _stream()
        append_tallied(event_store, stream, 3, event_type)
        runner = self.runner(Tally(event_type), event_store, store)
        runner.start()
        try:
            runner.wait_for(event_store.head_position(), timeout=10)
            report = rebuild(Tally(event_type), event_store, store)
            assert report is not None
            position = append_tallied(event_store, stream, 2, event_type)
            runner.wait_for(position, timeout=10)
            live = store.describe("tally").live
            assert live is not None
            assert live.number == report.generation
            assert self.counts(store) == {stream: 5}
        finally:
            runner.stop()
            runner.join(10)

    # -- segments -------------------------------------------------------------------------

    def break_lease(
        self, store: ReadModelStore, projection: str, role: LeaseRole, segment: int | None
    ) -> None:
        """Hook: free a lease while its holder still believes it holds it (see :func:`break_lease`)."""
        break_lease(store, projection, role, segment)

    @staticmethod
    def in_order(store: ReadModelStore, name: str = "tally") -> bool:
        """Whether every stream's events were applied in the order of their revisions."""
        with store.read(name) as view:
            return all(doc["in_order"] for doc in view.table("streams").find())

    def test_a_segmented_projection_equals_the_unsegmented_one_in_order(
        self, event_store: EventStore, store: ReadModelStore, event_type: str
    ) -> None:
        streams = [stream for bucket in _streams_in_segments(4, 3) for stream in bucket]
        for round_ in range(4):  # interleaved, so each segment skips the others' events
            for stream in streams:
                append_tallied(event_store, stream, 2 + round_ % 2, event_type)
        total = 12 * (2 + 3 + 2 + 3)
        outcome = self.runner(SegmentedTally(event_type), event_store, store, batch_size=16).run(
            until_caught_up=True
        )
        assert outcome is RunOutcome.CAUGHT_UP
        self.runner(TallyCopy(event_type), event_store, store).run(until_caught_up=True)
        tables = ("streams", "applied")
        assert read_model_snapshot(store, "tally", tables) == read_model_snapshot(store, "tally_copy", tables)
        assert self.counts(store) == dict.fromkeys(sorted(streams), 10)
        assert self.in_order(store)
        live = store.describe("tally").live
        assert live is not None
        assert (live.segments, live.events_applied) == (4, total)
        assert [p.events_applied for p in live.segment_progress] == [30, 30, 30, 30]

    def test_two_workers_share_the_segments_and_one_takes_all_when_the_other_stops(
        self, event_store: EventStore, store: ReadModelStore, event_type: str
    ) -> None:
        streams = [bucket[0] for bucket in _streams_in_segments(4, 1)]

        def append_round() -> int:
            return max(append_tallied(event_store, stream, 1, event_type) for stream in streams)

        def workers_of_latest() -> list[str]:
            with store.read("tally") as view:
                docs = [view.table("streams").get(stream) for stream in streams]
            return [doc["worker"] for doc in docs if doc is not None]

        first = self.runner(WorkerTally(event_type, worker="a"), event_store, store)
        second = self.runner(WorkerTally(event_type, worker="b"), event_store, store)
        try:
            first.start()
            first.wait_for(append_round(), timeout=15)
            assert workers_of_latest() == ["a"] * 4
            second.start()
            # The second worker counts itself in; the first hands back its extra segments.
            _wait_until(lambda: first.status().workers == 2, "the second worker never showed")

            def shared() -> bool:
                first.wait_for(append_round(), timeout=15)
                return sorted(workers_of_latest()) == ["a", "a", "b", "b"]

            _wait_until(shared, "the workers never shared the segments two each")
            status = first.status()
            assert [s.running for s in status.segments] == [True] * 4
            assert {s.owner for s in status.segments} == {f"{socket.gethostname()}:{os.getpid()}"}
            first.stop()
            first.join(15)
            _wait_until(lambda: second.status().workers == 1, "the first worker's slot stayed taken")

            def taken_over() -> bool:
                second.wait_for(append_round(), timeout=15)
                return workers_of_latest() == ["b"] * 4

            _wait_until(taken_over, "the second worker never took every segment")
        finally:
            first.stop()
            second.stop()
            first.join(15)
            second.join(15)
        assert self.in_order(store)
        counts = self.counts(store)
        assert set(counts) == set(streams)
        assert len(set(counts.values())) == 1  # every round applied to every stream, once
        assert not store.leases_held("tally", LeaseRole.WORKER, MAX_SEGMENTS)
        assert not store.leases_held("tally", LeaseRole.RUN, 4)

    def test_a_parked_event_holds_back_its_keys_later_events_in_its_segment_only(
        self, event_store: EventStore, store: ReadModelStore, event_type: str
    ) -> None:
        buckets = _streams_in_segments(4, 2)
        segment = 1
        key, neighbour = buckets[segment]  # the same segment
        elsewhere = buckets[3][0]
        append_tallied(event_store, key, 2, event_type)
        bad = append_tallied(event_store, key, 1, event_type)
        append_tallied(event_store, neighbour, 1, event_type)
        append_tallied(event_store, elsewhere, 1, event_type)
        append_tallied(event_store, key, 2, event_type)
        append_tallied(event_store, neighbour, 1, event_type)
        append_tallied(event_store, elsewhere, 1, event_type)
        fixed = {"yes": False}
        projection = ParkingSegmentedTally(
            event_type, poison=lambda e: e.position == bad and not fixed["yes"]
        )
        runner = self.runner(projection, event_store, store, batch_size=3)
        assert runner.run(until_caught_up=True) is RunOutcome.CAUGHT_UP
        assert self.counts(store) == {key: 2, neighbour: 2, elsewhere: 2}
        parked = store.parked_events("tally")
        assert [(p.stream, p.revision, p.key, p.segment, p.held_back) for p in parked] == [
            (key, 2, key, segment, False),
            (key, 3, key, segment, True),
            (key, 4, key, segment, True),
        ]
        assert (parked[0].position, parked[0].attempts) == (bad, 3)
        status = projection_status(projection, event_store, store)
        assert [s.parked for s in status.segments] == [0, 3, 0, 0]
        assert status.parked == 3
        fixed["yes"] = True
        assert runner.retry_parked(keys=[key]) == 3
        assert store.parked_events("tally") == []
        assert self.counts(store) == {key: 5, neighbour: 2, elsewhere: 2}
        assert self.in_order(store)
        append_tallied(event_store, key, 1, event_type)
        runner.run(until_caught_up=True)
        assert self.counts(store) == {key: 6, neighbour: 2, elsewhere: 2}

    def _fail_in_segment_two(
        self, event_store: EventStore, store: ReadModelStore, event_type: str
    ) -> tuple[ProjectionFailedError, str, int]:
        """Run a segmented tally whose one event of segment 2 keeps failing: the error, stream, position."""
        from structlog.testing import capture_logs  # noqa: PLC0415 - test-only

        buckets = _streams_in_segments(4, 1)
        stream = buckets[2][0]
        for bucket in buckets:
            append_tallied(event_store, bucket[0], 2, event_type)
        bad = append_tallied(event_store, stream, 1, event_type)
        runner = self.runner(
            SegmentedTally(event_type, poison=lambda e: e.position == bad), event_store, store
        )
        # Captured, the crash's traceback is not rendered (which takes a second or more).
        with capture_logs():
            runner.start()
            with pytest.raises(ProjectionFailedError) as raised:
                runner.join(15)
        return raised.value, stream, bad

    def test_a_failure_in_one_segment_stops_the_worker_naming_the_event(
        self, event_store: EventStore, store: ReadModelStore, event_type: str
    ) -> None:
        error, stream, bad = self._fail_in_segment_two(event_store, store, event_type)
        assert (error.projection, error.stream, error.revision, error.position) == ("tally", stream, 2, bad)
        assert error.attempts == 3
        assert stream in str(error)
        assert self.counts(store)[stream] == 2
        record = store.describe("tally")
        assert record.state is ProjectionState.FAILED, record.state
        assert record.last_error is not None
        assert stream in record.last_error
        assert not store.leases_held("tally", LeaseRole.WORKER, MAX_SEGMENTS)
        assert not store.leases_held("tally", LeaseRole.RUN, 4)

    def test_a_worker_whose_segment_lease_was_taken_over_cannot_commit(
        self, event_store: EventStore, store: ReadModelStore, event_type: str
    ) -> None:
        from structlog.testing import capture_logs  # noqa: PLC0415 - test-only

        buckets = _streams_in_segments(4, 1)
        lost, kept = buckets[0][0], buckets[3][0]
        runner = self.runner(SegmentedTally(event_type), event_store, store)
        taken: Lease | None = None
        with capture_logs() as logs:
            runner.start()
            try:
                runner.wait_for(max(append_tallied(event_store, s, 1, event_type) for s in (lost, kept)), 15)
                live = store.describe("tally").live
                assert live is not None
                before = live.segment_progress[0]
                # Segment 0's holder is presumed dead: its lock is broken and taken by another.
                self.break_lease(store, "tally", LeaseRole.RUN, 0)
                taken = store.lease("tally", LeaseRole.RUN, segment=0)
                _wait_until(taken.try_acquire, "the broken lease never became free")
                append_tallied(event_store, lost, 3, event_type)
                append_tallied(event_store, kept, 2, event_type)
                _wait_until(
                    lambda: any(
                        e["event"] == "projection.lease_lost" and e.get("segment") == 0 for e in logs
                    ),
                    "the worker never met the lost lease",
                )
                _wait_until(lambda: self.counts(store)[kept] == 3, "the other segments stopped")
                # Nothing of the segment whose lease was lost: no documents, no checkpoint.
                assert self.counts(store)[lost] == 1
                live = store.describe("tally").live
                assert live is not None
                after = live.segment_progress[0]
                assert (after.checkpoint, after.events_applied) == (before.checkpoint, before.events_applied)
                lost_error = next(e for e in logs if e["event"] == "projection.lease_lost")
                assert "LeaseLostError" in lost_error["error"]
                # Once the lease is free again, the worker claims the segment back and goes on.
                taken.release()
                _wait_until(lambda: self.counts(store)[lost] == 4, "the worker never took the segment back")
                assert self.in_order(store)
            finally:
                runner.stop()
                runner.join(15)
                if taken is not None:
                    taken.release()

    def test_bumping_a_segmented_projections_version_rebuilds_blue_green(
        self, event_store: EventStore, store: ReadModelStore, event_type: str
    ) -> None:
        buckets = _streams_in_segments(4, 2)
        streams = [stream for bucket in buckets for stream in bucket]
        for stream in streams:
            append_tallied(event_store, stream, 5, event_type)
        self.runner(SegmentedTally(event_type), event_store, store).run(until_caught_up=True)
        old = store.describe("tally").live
        assert old is not None
        served: list[tuple[int, int, set[int]]] = []
        outcomes: list[RunOutcome] = []
        upgrader = self.runner(SegmentedTallyV2(event_type, delay=0.005), event_store, store)
        thread = threading.Thread(target=lambda: outcomes.append(upgrader.run(until_caught_up=True)))
        thread.start()
        try:
            while thread.is_alive():  # what queries see while the new version builds, and after
                with store.read("tally") as view:
                    versions = {doc["version"] for doc in view.table("streams").find()}
                    served.append((view.generation.number, view.generation.version, versions))
                time.sleep(0.01)
        finally:
            upgrader.stop()
            thread.join(15)
        assert outcomes == [RunOutcome.CAUGHT_UP]
        new = store.describe("tally").live
        assert new is not None
        # The old generation, whole, until the switch; then the new one, whole; nothing between.
        old_view, new_view = (old.number, 1, {1}), (new.number, 2, {2})
        assert served[0] == old_view
        switched = served.index(new_view) if new_view in served else len(served)
        assert all(look == old_view for look in served[:switched])
        assert all(look == new_view for look in served[switched:])
        assert new.number != old.number
        assert (new.version, new.segments, new.events_applied) == (2, 4, 40)
        assert store.describe("tally").building is None
        last = {stream: max(e.position for e in event_store.read_stream(stream)) for stream in streams}
        for progress in new.segment_progress:
            assert progress.checkpoint is not None
            assert progress.checkpoint >= max(last[stream] for stream in buckets[progress.segment])
            assert progress.events_applied == 10
        with store.read("tally") as view:
            docs = view.table("streams").find()
        assert {doc["version"] for doc in docs} == {2}
        assert self.counts(store) == dict.fromkeys(sorted(streams), 5)
        assert self.in_order(store)

    def test_changing_the_number_of_segments_rebuilds(
        self, event_store: EventStore, store: ReadModelStore, event_type: str
    ) -> None:
        streams = [_stream() for _ in range(6)]
        for stream in streams:
            append_tallied(event_store, stream, 4, event_type)
        numbers = []
        for projection in (Tally(event_type), SegmentedTally(event_type), TwoSegmentTally(event_type)):
            assert (
                self.runner(projection, event_store, store).run(until_caught_up=True) is RunOutcome.CAUGHT_UP
            )
            live = store.describe("tally").live
            assert live is not None
            assert (live.segments, len(live.segment_progress)) == (
                projection.segments,
                0 if projection.segments == 1 else projection.segments,
            )
            assert live.events_applied == 24
            numbers.append(live.number)
            assert self.counts(store) == dict.fromkeys(sorted(streams), 4)
            assert self.in_order(store)
        assert len(set(numbers)) == 3  # each change built a new generation

    def test_rebuilding_a_segmented_projection_reports_each_segments_progress(
        self, event_store: EventStore, store: ReadModelStore, event_type: str
    ) -> None:
        streams = [stream for bucket in _streams_in_segments(4, 2) for stream in bucket]
        for stream in streams:
            append_tallied(event_store, stream, 5, event_type)
        self.runner(SegmentedTally(event_type), event_store, store).run(until_caught_up=True)
        before = read_model_snapshot(store, "tally", ("streams", "applied"))
        live = store.describe("tally").live
        assert live is not None
        progress: list[Progress] = []
        # A little slow (40 events, 20 ms each), so that progress is reported while it builds.
        builder = self.runner(SegmentedTally(event_type, delay=0.02), event_store, store)
        watchdog = threading.Timer(15.0, builder.stop)  # a rebuild that never ends fails, not hangs
        watchdog.start()
        try:
            report = rebuild(builder.projection, event_store, store, progress=progress.append, runner=builder)
        finally:
            watchdog.cancel()
        assert report is not None
        assert report.switched
        assert report.generation != live.number
        assert report.events == 40
        assert progress, "no progress was reported"
        assert all(len(update.segments) == 4 for update in progress)
        assert [update.done for update in progress] == sorted(update.done for update in progress)
        for update in progress:
            assert update.done == sum(segment.events_applied for segment in update.segments)
        after = store.describe("tally").live
        assert after is not None
        assert after.number == report.generation
        assert read_model_snapshot(store, "tally", ("streams", "applied")) == before
