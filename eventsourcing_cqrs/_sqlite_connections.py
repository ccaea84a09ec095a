"""One SQLite connection per thread, opened lazily, closed when its thread ends (shared by both sides).

A ``sqlite3.Connection`` must not be used by two threads at once, so each store keeps one per
thread. A server that runs each request on a new thread would otherwise leave one open
connection (a file descriptor for the database, one for its WAL, and SQLite's page cache) per
request ever served. :class:`ThreadConnections` ties each connection to its thread:

* the connection lives in a :class:`threading.local`, wrapped in a small holder object with a
  :func:`weakref.finalize`. CPython drops a thread's ``threading.local`` values when the
  thread ends (also for threads not started by :mod:`threading`), so the holder dies then
  and the finalizer closes the connection. Connections are opened with
  ``check_same_thread=False``, so closing one from the thread that ends or from the garbage
  collector anywhere is allowed;
* :meth:`ThreadConnections.close` closes every connection still open, from any thread;
* a manager that is dropped without :meth:`~ThreadConnections.close` closes its connections
  as its ``threading.local`` goes.

The read side's SQLite read model store uses it too (the read side may import the write
side; the write side never imports the read side).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import weakref
from collections.abc import Callable

__all__ = ["ThreadConnections"]


class _Held:
    """The holder of one thread's connection: when it dies (thread ended), the connection closes."""

    __slots__ = ("__weakref__", "connection")

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection


class _PerThread(threading.local):
    held: _Held | None = None


class _Open:
    """The connections still open, shared with the finalizers (which must not hold the manager)."""

    __slots__ = ("connections", "lock")

    def __init__(self) -> None:
        self.connections: set[sqlite3.Connection] = set()
        self.lock = threading.Lock()


def _release(still_open: _Open, connection: sqlite3.Connection) -> None:
    """Close ``connection``: its thread ended (or its manager went away)."""
    with still_open.lock:
        still_open.connections.discard(connection)
    with contextlib.suppress(sqlite3.Error):
        connection.close()


class ThreadConnections:
    """Per-thread connections made by ``open`` (which must pass ``check_same_thread=False``)."""

    def __init__(self, open: Callable[[], sqlite3.Connection]) -> None:
        self._open = open
        self._local = _PerThread()
        self._still_open = _Open()

    @property
    def open_count(self) -> int:
        """How many connections are open now (one per thread that used the store and lives on)."""
        with self._still_open.lock:
            return len(self._still_open.connections)

    def get(self) -> sqlite3.Connection | None:
        """This thread's connection, or ``None`` if it has none yet (call :meth:`open` then)."""
        held = self._local.held
        return None if held is None else held.connection

    def open(self) -> sqlite3.Connection:
        """This thread's connection, opened now if it has none; ``open``'s errors propagate."""
        held = self._local.held
        if held is not None:
            return held.connection
        connection = self._open()
        still_open = self._still_open
        with still_open.lock:
            still_open.connections.add(connection)
        held = _Held(connection)
        weakref.finalize(held, _release, still_open, connection)
        self._local.held = held
        return connection

    def close(self) -> None:
        """Close every connection still open; idempotent.

        A later :meth:`open` opens a new connection: refusing use after close is the store's
        decision (the event store refuses, the read model store reopens).
        """
        still_open = self._still_open
        with still_open.lock:
            connections = list(still_open.connections)
            still_open.connections.clear()
        for connection in connections:
            with contextlib.suppress(sqlite3.Error):
                connection.close()
        self._local = _PerThread()
