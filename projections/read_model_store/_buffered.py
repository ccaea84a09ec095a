"""The table API on top of four primitives, shared by every adapter.

A unit of work buffers its writes (a later write to the same key replaces the earlier one) and
caches what it read, so a batch of events that touches one account a hundred times reads it
once and writes it once. Before any query (``find``, ``count``, raw SQL) and at commit, the
buffer is flushed into the open transaction, so queries always see the unit's own writes.

Buffered and cached documents are kept decoded, in the form a JSON round trip gives them
(see :func:`~projections.read_model_store._documents.normalize_document`): an update merges into the
dict, and each document is encoded once, when the buffer is flushed. Callers get copies, so
mutating what ``get`` or ``update`` returned never changes the buffer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from projections.errors import DocumentNotFoundError, UnknownTableError
from projections.read_model_store._documents import (
    copy_document,
    decode_document,
    encode_normalized,
    merge_changes,
    normalize_document,
    validate_key,
    validate_limit,
    validate_where,
)
from projections.read_model_store._names import physical_table_name, quote, validate_field_name
from projections.read_model_store.port import Document, Generation, TableSpec, WhereValue

__all__ = ["BufferedUnitOfWork", "DocumentSource", "ReadOnlyView"]

Where = list[tuple[str, WhereValue]]


class DocumentSource(ABC):
    """Reads one generation's tables: what a view needs from an adapter."""

    def __init__(self, generation: Generation) -> None:
        self._generation = generation
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

    def physical(self, name: str) -> str:
        """The unquoted physical name of table ``name``."""
        self.spec(name)
        return physical_table_name(self._generation.projection, self._generation.number, name)

    def sql_table(self, name: str) -> str:
        """The quoted physical name of table ``name``, for raw SQL."""
        return quote(self.physical(name))

    def get_document(self, table: str, key: str) -> Document | None:
        text = self._load(table, validate_key(key))
        return None if text is None else decode_document(text)

    def find_documents(
        self,
        table: str,
        where: Mapping[str, WhereValue] | None,
        order_by: str | None,
        descending: bool,
        limit: int | None,
    ) -> list[Document]:
        pairs = validate_where(where)
        if order_by is not None:
            validate_field_name(order_by)
        checked_limit = validate_limit(limit)
        if checked_limit == 0:
            return []
        self._before_query()
        return self._select(table, pairs, order_by, bool(descending), checked_limit)

    def count_documents(self, table: str, where: Mapping[str, WhereValue] | None) -> int:
        pairs = validate_where(where)
        self._before_query()
        return self._select_count(table, pairs)

    def _before_query(self) -> None:  # noqa: B027 -- a hook, empty unless writes are buffered
        """Hook: make buffered writes visible to queries."""

    @abstractmethod
    def _load(self, table: str, key: str) -> str | None:
        """The JSON text at ``key`` in logical table ``table``, or ``None``."""

    @abstractmethod
    def _select(
        self, table: str, where: Where, order_by: str | None, descending: bool, limit: int | None
    ) -> list[Document]:
        """Matching documents in portable order."""

    @abstractmethod
    def _select_count(self, table: str, where: Where) -> int:
        """How many documents match."""


class _TableReader:
    def __init__(self, source: DocumentSource, name: str) -> None:
        source.spec(name)
        self._source = source
        self._name = name

    def __repr__(self) -> str:
        return f"<table {self._name!r} of {self._source.generation.projection!r}>"

    @property
    def name(self) -> str:
        return self._name

    def get(self, key: str) -> Document | None:
        return self._source.get_document(self._name, key)

    def find(
        self,
        where: Mapping[str, WhereValue] | None = None,
        *,
        order_by: str | None = None,
        descending: bool = False,
        limit: int | None = None,
    ) -> list[Document]:
        return self._source.find_documents(self._name, where, order_by, descending, limit)

    def count(self, where: Mapping[str, WhereValue] | None = None) -> int:
        return self._source.count_documents(self._name, where)


class _Table(_TableReader):
    _source: BufferedUnitOfWork

    def __init__(self, source: BufferedUnitOfWork, name: str) -> None:
        super().__init__(source, name)

    def put(self, key: str, document: Mapping[str, Any]) -> None:
        self._source.put_document(self._name, key, document)

    def update(self, key: str, changes: Mapping[str, Any]) -> Document:
        return self._source.update_document(self._name, key, changes)

    def delete(self, key: str) -> bool:
        return self._source.delete_document(self._name, key)


class ReadOnlyView(DocumentSource):
    """A :class:`~projections.read_model_store.port.ReadView` over an adapter's reads."""

    def table(self, name: str) -> _TableReader:
        """One of the generation's tables."""
        return _TableReader(self, name)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Raw SQL; see the adapter."""
        return self._execute(sql, params)

    @abstractmethod
    def _execute(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]: ...


class BufferedUnitOfWork(DocumentSource):
    """A :class:`~projections.read_model_store.port.ReadModelWriter` that buffers until a query or commit."""

    def __init__(self, generation: Generation) -> None:
        super().__init__(generation)
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
        return self._execute(sql, params)

    def _current(self, table: str, key: str) -> Document | None:
        """The unit's view of ``key`` (shared, not a copy): buffered, cached or loaded."""
        pending = self._pending.get(table)
        if pending is not None and key in pending:
            return pending[key]
        cache = self._cache.get(table)
        if cache is None:
            cache = self._cache[table] = {}
        elif key in cache:
            return cache[key]
        text = self._load(table, key)
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
        # The common case first: a key this unit already wrote (its table and key were checked then).
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
        """Write the buffered changes into the open transaction, each document encoded once."""
        for table, changes in self._pending.items():
            if not changes:
                continue
            upserts = [
                (key, encode_normalized(document))
                for key, document in changes.items()
                if document is not None
            ]
            deletes = [key for key, document in changes.items() if document is None]
            self._write(table, upserts, deletes)
            cache = self._cache.get(table)
            if cache is None:
                self._cache[table] = changes
            else:
                cache.update(changes)
        self._pending.clear()

    @abstractmethod
    def _write(self, table: str, upserts: list[tuple[str, str]], deletes: list[str]) -> None:
        """Apply upserts and deletes to logical table ``table`` inside the transaction."""

    @abstractmethod
    def _execute(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]: ...
