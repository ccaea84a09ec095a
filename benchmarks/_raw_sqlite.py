"""The raw side of ``compare.py``: the same work written directly against ``sqlite3`` and ``json``.

No framework, no validation, no metadata: the practical limit for CPython on SQLite. Same
functions and classes as the other sides (see ``_ours.py``): W1 ``Commands``, W2
``replay_loaders``, W3 ``rebuild``, W4 ``latency``. There is no W3 ``fill``: the raw rebuild
reads the event store file our side's ``fill`` writes (the same rows ours reads), and the W4
writer inserts rows into that file's ``events`` table.

Not a script: run ``compare.py``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path

import _ours
from _common import AMOUNT, EVENTS_PER_ACCOUNT, SNAPSHOT_TAIL, SYNC_MODES, Loaders, wait_until

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS events (position INTEGER PRIMARY KEY, stream TEXT NOT NULL, "
    "revision INTEGER NOT NULL, type TEXT NOT NULL, data BLOB NOT NULL, UNIQUE (stream, revision))",
    "CREATE TABLE IF NOT EXISTS snapshots (stream TEXT NOT NULL, revision INTEGER NOT NULL, "
    "data BLOB NOT NULL, PRIMARY KEY (stream, revision)) WITHOUT ROWID",
)
READ_MODEL = (
    "CREATE TABLE IF NOT EXISTS balances "
    "(account_id TEXT PRIMARY KEY, owner TEXT, balance TEXT) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS checkpoint (name TEXT PRIMARY KEY, position INTEGER) WITHOUT ROWID",
)
BATCH = 500  # W3/W4: events per read-model transaction


def connect(path: Path, *, durable: bool, schema: Sequence[str] = ()) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(f"PRAGMA synchronous={SYNC_MODES[durable]}")
    for statement in schema:
        connection.execute(statement)
    return connection


class RawBank:
    """Commands as plain SQL: read the stream, fold it, append with a version check."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.db = connection

    def _append(self, stream: str, expected: int, type_: str, payload: dict[str, str]) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            (last,) = self.db.execute(
                "SELECT coalesce(max(revision), -1) FROM events WHERE stream = ?", (stream,)
            ).fetchone()
            if last == expected:
                self.db.execute(
                    "INSERT INTO events (stream, revision, type, data) VALUES (?, ?, ?, ?)",
                    (stream, expected + 1, type_, json.dumps(payload).encode()),
                )
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        if last != expected:
            self.db.execute("ROLLBACK")
            raise RuntimeError(f"{stream}: expected {expected}, found {last}")
        self.db.execute("COMMIT")

    def load(self, stream: str, *, snapshot: bool = False) -> tuple[int, Decimal]:
        version, balance = -1, Decimal(0)
        if snapshot:
            row = self.db.execute(
                "SELECT revision, data FROM snapshots WHERE stream = ? ORDER BY revision DESC LIMIT 1",
                (stream,),
            ).fetchone()
            if row is not None:
                version, balance = row[0], Decimal(json.loads(row[1])["balance"])
        for revision, data in self.db.execute(
            "SELECT revision, data FROM events WHERE stream = ? AND revision > ? ORDER BY revision",
            (stream, version),
        ):
            payload = json.loads(data)
            if "balance" in payload:
                balance = Decimal(payload["balance"])
            version = revision
        return version, balance

    def deposit(self, account_id: str, amount: Decimal) -> None:
        stream = f"Account-{account_id}"
        version, balance = self.load(stream)
        payload = {"account_id": account_id, "amount": str(amount), "balance": str(balance + amount)}
        self._append(stream, version, "MoneyDeposited", payload)


def project(
    events: sqlite3.Connection, model: sqlite3.Connection, after: int, *, limit: int | None = None
) -> tuple[int, int]:
    """Apply the bank events after ``after`` to ``model`` in batches of 500, each batch one
    transaction with its checkpoint; returns (events applied, new checkpoint)."""
    applied = 0
    query = (
        "SELECT position, type, data FROM events WHERE position > ? "
        "AND type IN ('AccountOpened', 'MoneyDeposited') ORDER BY position LIMIT ?"
    )
    while True:
        rows = events.execute(query, (after, BATCH)).fetchall()
        if not rows:
            return applied, after
        model.execute("BEGIN IMMEDIATE")
        for _position, type_, data in rows:
            payload = json.loads(data)
            if type_ == "AccountOpened":
                model.execute(
                    "INSERT INTO balances VALUES (?, ?, '0') ON CONFLICT (account_id) DO NOTHING",
                    (payload["account_id"], payload["owner"]),
                )
            else:
                model.execute(
                    "UPDATE balances SET balance = ? WHERE account_id = ?",
                    (payload["balance"], payload["account_id"]),
                )
        after = rows[-1][0]
        model.execute(
            "INSERT INTO checkpoint VALUES ('balances', ?) "
            "ON CONFLICT (name) DO UPDATE SET position = excluded.position",
            (after,),
        )
        model.execute("COMMIT")
        applied += len(rows)
        if limit is not None and applied >= limit:
            return applied, after


def _balance(execute: Callable[..., sqlite3.Cursor], account_id: str) -> str | None:
    row = execute("SELECT balance FROM balances WHERE account_id = ?", (account_id,)).fetchone()
    return None if row is None else str(row[0])


# =========================================================================================
# W1 commands
# =========================================================================================


class Commands:
    """Each command a read of the stream, a fold and an append in one ``BEGIN IMMEDIATE``."""

    def __init__(self, path: Path, durable: bool) -> None:
        self.db = connect(path, durable=durable, schema=SCHEMA)
        self.bank = RawBank(self.db)

    def seed(self, number: int, events: int) -> str:
        """An account opened with ``events - 1`` deposits, in one transaction (set-up, untimed)."""
        account_id = f"bench-{number}"
        stream = f"Account-{account_id}"
        rows = [(stream, 0, "AccountOpened", json.dumps({"account_id": account_id, "owner": "Bench"}))]
        balance = Decimal(0)
        for revision in range(1, events):
            balance += AMOUNT
            payload = {"account_id": account_id, "amount": str(AMOUNT), "balance": str(balance)}
            rows.append((stream, revision, "MoneyDeposited", json.dumps(payload)))
        self.db.execute("BEGIN IMMEDIATE")
        self.db.executemany(
            "INSERT INTO events (stream, revision, type, data) VALUES (?, ?, ?, ?)",
            [(stream, revision, type_, data.encode()) for stream, revision, type_, data in rows],
        )
        self.db.execute("COMMIT")
        return account_id

    def deposit(self, account_id: str) -> None:
        self.bank.deposit(account_id, AMOUNT)

    def balance(self, account_id: str) -> Decimal:
        return self.bank.load(f"Account-{account_id}")[1]

    def close(self) -> None:
        self.db.close()


# =========================================================================================
# W2 replay
# =========================================================================================


def replay_loaders(directory: Path, events: int) -> Loaders:
    """(full replay, snapshot + tail, close) for one account of ``events`` events."""
    db = connect(directory / "w2-raw.db", durable=False, schema=SCHEMA)
    stream = "Account-long"
    rows, balance = [], Decimal(0)
    rows.append((stream, 0, "AccountOpened", b'{"account_id": "long", "owner": "Bench"}'))
    for revision in range(1, events):
        balance += AMOUNT
        payload = {"account_id": "long", "amount": str(AMOUNT), "balance": str(balance)}
        rows.append((stream, revision, "MoneyDeposited", json.dumps(payload).encode()))
    db.executemany("INSERT INTO events (stream, revision, type, data) VALUES (?, ?, ?, ?)", rows)
    snapshot_at = events - SNAPSHOT_TAIL - 1
    state = json.dumps({"owner": "Bench", "balance": str(AMOUNT * snapshot_at), "closed": False})
    db.execute("INSERT INTO snapshots VALUES (?, ?, ?)", (stream, snapshot_at, state.encode()))
    bank = RawBank(db)
    assert bank.load(stream) == bank.load(stream, snapshot=True) == (events - 1, balance)
    return (lambda: bank.load(stream)), (lambda: bank.load(stream, snapshot=True)), db.close


# =========================================================================================
# W3 rebuild
# =========================================================================================


def rebuild(source: Path, target: Path, durable: bool) -> tuple[int, Callable[[], Decimal]]:
    """Reads our event store's file (the same rows ours reads) with plain SQL and ``json``."""
    events = sqlite3.connect(source)
    model = connect(target, durable=durable, schema=READ_MODEL)
    count, _ = project(events, model, 0)
    events.close()

    def total() -> Decimal:
        return sum((Decimal(row[0]) for row in model.execute("SELECT balance FROM balances")), Decimal(0))

    return count, total


# =========================================================================================
# W4 latency
# =========================================================================================


def latency(directory: Path, samples: int, durable: bool) -> list[float]:
    """A projector thread woken by the writer (as our store wakes its subscriptions), polling too."""
    source = directory / "w4-raw-events.db"
    _ours.fill(source, EVENTS_PER_ACCOUNT)  # one account to deposit into, in our store's file format
    target = directory / "w4-raw-model.db"
    writer = connect(source, durable=durable)
    reader = connect(target, durable=durable, schema=READ_MODEL)
    wake = threading.Event()
    stop = threading.Event()

    def projector() -> None:
        events = sqlite3.connect(source)
        model = connect(target, durable=durable)
        after = 0
        while not stop.is_set():
            wake.clear()  # before reading, so that an append after the read is not missed
            applied, after = project(events, model, after)
            if not applied:
                wake.wait(0.02)
        events.close()
        model.close()

    thread = threading.Thread(target=projector, daemon=True)
    thread.start()
    latencies = []
    try:
        balance = AMOUNT * (EVENTS_PER_ACCOUNT - 1)
        wait_until(lambda: _balance(reader.execute, "acc-0"), str(balance), time.perf_counter() + 30)
        (revision,) = writer.execute(
            "SELECT max(revision) FROM events WHERE stream = 'Account-acc-0'"
        ).fetchone()
        for _ in range(samples):
            balance += AMOUNT
            revision += 1
            data = json.dumps(
                {"account_id": "acc-0", "amount": str(AMOUNT), "balance": str(balance)}
            ).encode()
            started = time.perf_counter()
            writer.execute("BEGIN IMMEDIATE")
            writer.execute(
                "INSERT INTO events (stream, revision, id, type, data, metadata, content_type, recorded_at) "
                "VALUES ('Account-acc-0', ?, ?, 'MoneyDeposited', ?, x'', 'application/json', 0)",
                (revision, uuid.uuid4().bytes, data),
            )
            writer.execute("COMMIT")
            wake.set()
            wait_until(lambda: _balance(reader.execute, "acc-0"), str(balance), started + 10)
            latencies.append(time.perf_counter() - started)
    finally:
        stop.set()
        wake.set()
        thread.join()
        writer.close()
        reader.close()
    return latencies
