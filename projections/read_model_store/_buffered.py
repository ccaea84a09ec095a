"""The table API over an adapter's document source, shared by every adapter.

An adapter does not subclass anything here: it provides a *document source* (the few
primitives of :class:`DocumentSource`, or :class:`DocumentSink` to write) and, for the
runner's side of a transaction, a :class:`GenerationLedger` (checkpoint and parked events).
:class:`ReadOnlyView` and :class:`BufferedTransaction` *hold* those objects and add what every
adapter shares: the declared tables (:class:`~projections.errors.UnknownTableError`),
argument checks, and, for writes, the buffer.

A :class:`BufferedTransaction` buffers its writes (a later write to the same key replaces the
earlier one) and caches what it read, so a batch of events that touches one account a hundred
times reads it once and writes it once. Before any query (``find``, ``count``, raw SQL) and at
commit, the buffer is flushed into the source, so queries always see the transaction's own
writes.

Buffered and cached documents are kept decoded, in the form a JSON round trip gives them
(see :func:`~projections.read_model_store._documents.normalize_document`): an update merges into the
dict, and each document is encoded once, when the buffer is flushed. Callers get copies, so
mutating what ``get`` or ``update`` returned never changes the buffer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from eventsourcing_cqrs.event_store.port import RecordedEvent
from projections.errors import DocumentNotFoundError, UnknownTableError
from projections.read_model_store._documents import (
    copy_document,
    decode_document,
    encode_normalized,
    merge_changes,
    normalize_document,
    validate_key,
    validate_limit,
    validate_offset,
    validate_where,
)
from projections.read_model_store._names import validate_field_name
from projections.read_model_store.port import Document, Generation, ParkedEvent, TableSpec, WhereValue

__all__ = [
    "BufferedTransaction",
    "DocumentSink",
    "DocumentSource",
    "GenerationLedger",
    "ReadOnlyView",
    "Where",
]

Where = list[tuple[str, WhereValue]]


class DocumentSource(Protocol):
    """What an adapter provides to read one generation's tables.

    ``table`` is always a declared (logical) table name, checked before the call; ``where``,
    ``order_by``, ``limit`` and ``offset`` are checked too.
    """

    def load(self, table: str, key: str) -> str | None:
        """The JSON text at ``key``, or ``None``."""
        ...

    def select(
        self,
        table: str,
        where: Where,
        order_by: str | None,
        descending: bool,
        *,
        limit: int | None,
        offset: int,
    ) -> list[Document]:
        """Matching documents in portable order (see the port's module docstring), ``offset``
        of them skipped, at most ``limit`` returned."""
        ...

    def select_count(self, table: str, where: Where) -> int:
        """How many documents match."""
        ...

    def sql_table(self, table: str) -> str:
        """The quoted physical name of ``table``, for raw SQL."""
        ...

    def execute(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Raw SQL, or :class:`~projections.errors.UnsupportedOperationError`."""
        ...


class DocumentSink(DocumentSource, Protocol):
    """A document source that also writes, inside the adapter's open transaction."""

    def write(self, table: str, upserts: list[tuple[str, str]], deletes: list[str]) -> None:
        """Apply ``(key, JSON text)`` upserts and deletes to ``table``."""
        ...


class GenerationLedger(Protocol):
    """The runner's side of a transaction: checkpoint and parked events of its generation.

    The methods are those of :class:`~projections.read_model_store.port.ProjectionTransaction`.
    """

    def set_checkpoint(self, position: int, applied: int) -> None: ...

    def mark_caught_up(self) -> None: ...

    def park(
        self,
        event: RecordedEvent,
        error: str,
        attempts: int,
        *,
        key: str | None = None,
        held_back: bool = False,
    ) -> None: ...

    def parked_keys(self) -> set[str]: ...

    def parked_for_retry(self) -> list[ParkedEvent]: ...

    def unpark(self, position: int) -> None: ...

    def parked_failed_again(self, position: int, error: str, attempts: int) -> None: ...


class _Documents:
    """Checked reads of a generation's declared tables through a source (view and writer alike)."""

    def __init__(self, generation: Generation, source: DocumentSource) -> None:
        self._generation = generation
        self._source = source
        self._specs: dict[str, TableSpec] = {spec.name: spec for spec in generation.tables}

    @property
    def generation(self) -> Generation:
        """The generation this reads."""
        return self._generation

    def spec(self, name: str) -> TableSpec:
        """The declared table ``name``, or :class:`UnknownTableError`."""
        spec = self._specs.get(name) if isinstance(name, str) else None
        if spec is None:
            raise UnknownTableError(self._generation.projection, str(name))
        return spec

    def sql_table(self, name: str) -> str:
        """The quoted physical name of table ``name``, for raw SQL."""
        self.spec(name)
        return self._source.sql_table(name)

    def get_document(self, table: str, key: str) -> Document | None:
        text = self._source.load(table, validate_key(key))
        return None if text is None else decode_document(text)

    def find_documents(
        self,
        table: str,
        where: Mapping[str, WhereValue] | None,
        order_by: str | None,
        descending: bool,
        *,
        limit: int | None,
        offset: int,
    ) -> list[Document]:
        pairs = validate_where(where)
        if order_by is not None:
            validate_field_name(order_by)
        checked_limit = validate_limit(limit)
        checked_offset = validate_offset(offset)
        if checked_limit == 0:
            return []
        self._before_query()
        return self._source.select(
            table, pairs, order_by, bool(descending), limit=checked_limit, offset=checked_offset
        )

    def count_documents(self, table: str, where: Mapping[str, WhereValue] | None) -> int:
        pairs = validate_where(where)
        self._before_query()
        return self._source.select_count(table, pairs)

    def _before_query(self) -> None:
        """Hook: make buffered writes visible to queries (nothing to do for a view)."""


class _TableReader:
    def __init__(self, documents: _Documents, name: str) -> None:
        documents.spec(name)
        self._documents = documents
        self._name = name

    def __repr__(self) -> str:
        return f"<table {self._name!r} of {self._documents.generation.projection!r}>"

    @property
    def name(self) -> str:
        return self._name

    def get(self, key: str) -> Document | None:
        return self._documents.get_document(self._name, key)

    def find(
        self,
        where: Mapping[str, WhereValue] | None = None,
        *,
        order_by: str | None = None,
        descending: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Document]:
        return self._documents.find_documents(
            self._name, where, order_by, descending, limit=limit, offset=offset
        )

    def count(self, where: Mapping[str, WhereValue] | None = None) -> int:
        return self._documents.count_documents(self._name, where)


class _Table(_TableReader):
    _documents: BufferedTransaction

    def __init__(self, documents: BufferedTransaction, name: str) -> None:
        super().__init__(documents, name)

    def put(self, key: str, document: Mapping[str, Any]) -> None:
        self._documents.put_document(self._name, key, document)

    def update(self, key: str, changes: Mapping[str, Any]) -> Document:
        return self._documents.update_document(self._name, key, changes)

    def delete(self, key: str) -> bool:
        return self._documents.delete_document(self._name, key)


class ReadOnlyView(_Documents):
    """A :class:`~projections.read_model_store.port.ReadView` over an adapter's document source."""

    def table(self, name: str) -> _TableReader:
        """One of the generation's tables."""
        return _TableReader(self, name)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Raw SQL; see the adapter."""
        return self._source.execute(sql, params)


class BufferedTransaction(_Documents):
    """A :class:`~projections.read_model_store.port.ProjectionTransaction` that buffers writes.

    It holds the adapter's :class:`DocumentSink` (documents) and :class:`GenerationLedger`
    (checkpoint and parked events), and writes the buffer into the sink before a query, before
    the checkpoint and when the adapter calls :meth:`flush` at commit.
    """

    _source: DocumentSink

    def __init__(self, generation: Generation, documents: DocumentSink, ledger: GenerationLedger) -> None:
        super().__init__(generation, documents)
        self._ledger = ledger
        # Documents in normal form (None: deleted), never handed out without a copy.
        self._pending: dict[str, dict[str, Document | None]] = {}
        self._cache: dict[str, dict[str, Document | None]] = {}
        self._tables: dict[str, _Table] = {}

    def table(self, name: str) -> _Table:
        """One of the projection's declared tables."""
        table = self._tables.get(name)
        if table is None:
            table = self._tables[name] = _Table(self, name)
        return table

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Raw SQL inside the transaction, after the buffered writes."""
        self.flush()
        # Raw SQL may change documents behind the cache's back.
        self._cache.clear()
        return self._source.execute(sql, params)

    # -- documents ------------------------------------------------------------------------

    def _current(self, table: str, key: str) -> Document | None:
        """The transaction's view of ``key`` (shared, not a copy): buffered, cached or loaded."""
        pending = self._pending.get(table)
        if pending is not None and key in pending:
            return pending[key]
        cache = self._cache.get(table)
        if cache is None:
            cache = self._cache[table] = {}
        elif key in cache:
            return cache[key]
        text = self._source.load(table, key)
        document = cache[key] = None if text is None else decode_document(text)
        return document

    def _buffer(self, table: str) -> dict[str, Document | None]:
        pending = self._pending.get(table)
        if pending is None:
            pending = self._pending[table] = {}
        return pending

    def get_document(self, table: str, key: str) -> Document | None:
        self.spec(table)
        document = self._current(table, validate_key(key))
        return None if document is None else copy_document(document)

    def put_document(self, table: str, key: str, document: Mapping[str, Any]) -> None:
        self.spec(table)
        validate_key(key)
        self._buffer(table)[key] = normalize_document(table, key, document)

    def update_document(self, table: str, key: str, changes: Mapping[str, Any]) -> Document:
        # The common case first: a key this transaction already wrote (table and key were checked then).
        pending = self._pending.get(table) if type(table) is str else None
        if pending is not None and type(key) is str and key in pending:
            current = pending[key]
        else:
            self.spec(table)
            current = self._current(table, validate_key(key))
            pending = None
        if current is None:
            raise DocumentNotFoundError(table, key)
        merged = merge_changes(table, key, current, changes)
        (self._buffer(table) if pending is None else pending)[key] = merged
        return copy_document(merged)

    def delete_document(self, table: str, key: str) -> bool:
        self.spec(table)
        existed = self._current(table, validate_key(key)) is not None
        self._buffer(table)[key] = None
        return existed

    def _before_query(self) -> None:
        self.flush()

    def flush(self) -> None:
        """Write the buffered changes into the sink, each document encoded once."""
        for table, changes in self._pending.items():
            if not changes:
                continue
            upserts = [
                (key, encode_normalized(document))
                for key, document in changes.items()
                if document is not None
            ]
            deletes = [key for key, document in changes.items() if document is None]
            self._source.write(table, upserts, deletes)
            cache = self._cache.get(table)
            if cache is None:
                self._cache[table] = changes
            else:
                cache.update(changes)
        self._pending.clear()

    # -- the runner's side ----------------------------------------------------------------

    def set_checkpoint(self, position: int, applied: int) -> None:
        """Record the checkpoint, after the buffered writes."""
        self.flush()
        self._ledger.set_checkpoint(position, applied)

    def mark_caught_up(self) -> None:
        self._ledger.mark_caught_up()

    def park(
        self,
        event: RecordedEvent,
        error: str,
        attempts: int,
        *,
        key: str | None = None,
        held_back: bool = False,
    ) -> None:
        self._ledger.park(event, error, attempts, key=key, held_back=held_back)

    def parked_keys(self) -> set[str]:
        return self._ledger.parked_keys()

    def parked_for_retry(self) -> list[ParkedEvent]:
        return self._ledger.parked_for_retry()

    def unpark(self, position: int) -> None:
        self._ledger.unpark(position)

    def parked_failed_again(self, position: int, error: str, attempts: int) -> None:
        self._ledger.parked_failed_again(position, error, attempts)
