"""Many writers, few accounts: every deposit lands exactly once, conflicts are retried and counted.

Snapshots are on (every 50 events), so loading from a snapshot written by a concurrent
command is exercised too.
"""

from __future__ import annotations

import threading
from decimal import Decimal
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from escqrs.examples.bank import handlers
from escqrs.examples.bank.commands import Deposit, OpenAccount
from eventsourcing_cqrs.bus import CommandBus, RetryPolicy
from eventsourcing_cqrs.event_store import connect

THREADS = 8
DEPOSITS_PER_THREAD = 250
ACCOUNTS = [f"acc{n}" for n in range(5)]


def amount(thread: int, n: int) -> Decimal:
    """Distinct cent amounts, so a lost or doubled deposit changes the total."""
    return Decimal(1 + thread * DEPOSITS_PER_THREAD + n) / 100


@pytest.mark.slow
def test_concurrent_deposits_on_sqlite_lose_no_update(tmp_path: Path) -> None:
    store = connect(f"sqlite:///{tmp_path}/e.db")
    try:
        accounts = handlers.account_repository(store, snapshot_every=50)
        bus = CommandBus(retry=RetryPolicy(max_attempts=100, base_delay=0.0005, max_delay=0.01))
        handlers.register(bus, accounts)
        for account_id in ACCOUNTS:
            bus.dispatch(OpenAccount(account_id=account_id, owner="Ann"))
        expected = dict.fromkeys(ACCOUNTS, Decimal(0))
        for thread in range(THREADS):
            for n in range(DEPOSITS_PER_THREAD):
                expected[ACCOUNTS[(thread + n) % len(ACCOUNTS)]] += amount(thread, n)
        errors: list[BaseException] = []
        start = threading.Barrier(THREADS)

        def depositor(thread: int) -> None:
            start.wait()
            try:
                for n in range(DEPOSITS_PER_THREAD):
                    account_id = ACCOUNTS[(thread + n) % len(ACCOUNTS)]
                    bus.dispatch(Deposit(account_id=account_id, amount=amount(thread, n)))
            except BaseException as exc:  # noqa: BLE001 - asserted below; a thread must not die silently
                errors.append(exc)

        workers = [threading.Thread(target=depositor, args=(t,)) for t in range(THREADS)]
        with capture_logs() as logs:
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()

        assert errors == []
        for account_id in ACCOUNTS:
            account = accounts.load(account_id)
            assert account.balance == expected[account_id], account_id
            assert account.version == THREADS * DEPOSITS_PER_THREAD // len(ACCOUNTS)
        metrics = bus.metrics
        assert metrics.succeeded == len(ACCOUNTS) + THREADS * DEPOSITS_PER_THREAD
        assert metrics.conflicts > 0
        assert metrics.retries == metrics.conflicts
        assert metrics.exhausted == 0
        assert sum(log["event"] == "command.retried" for log in logs) == metrics.retries
    finally:
        store.close()
