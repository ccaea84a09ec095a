"""Reactor throughput beside the projection rebuild, on SQLite files and on the EventStoreDB test server.

    .venv/bin/python benchmarks/reactors.py              # the default sizes (about two minutes)
    .venv/bin/python benchmarks/reactors.py --quick      # a smoke run (well under a minute)
    .venv/bin/python benchmarks/reactors.py --stores sqlite --transfers 2000

Three rows per event store, ours only, each one measurement in a fresh child process
(``reactors.py --child``), the EventStoreDB test server
(:class:`~eventsourcing_cqrs.testing.esdb_server.EsdbServerProcess`, strict, in its own process)
fresh for each:

* **projection rebuild** — ``rebuild.py``'s measurement: ``--rebuild-events`` bank events
  (accounts of 100, appended untimed by ``rebuild.seed_events``), then
  :func:`projections.rebuild` of the bank's ``AccountList`` (blue/green, from position 0 through
  the switch, batches of 1000) into an SQLite read model file; events/s.
* **stateless reactor** — ``--accounts`` accounts opened through the bus (untimed), then the
  bank's :class:`~escqrs.examples.bank.transfers.WelcomeBonus` started from the beginning
  (``StartFrom.BEGINNING``) and run until caught up: one ``Deposit`` per ``AccountOpened``, each
  with its command id derived from the event, through the bank's bus (load the account, decide,
  append); events reacted to per second.
* **process manager** — ``--transfers`` ``TransferMoney`` commands requested while
  :class:`~escqrs.examples.bank.transfers.TransferProcess` is stopped (it was started from now
  before them), between 100 funded accounts, one in ``--refused-every`` to a closed account (the
  deposit is refused, the source is refunded: compensated); then the process manager is run
  until it has caught up with everything its own steps caused. Transfers finished (completed or
  compensated) per second, and events reacted to per second: every event its subscription
  delivered (the requests, the withdrawals and deposits, the transfers' own streams' events its
  filter passes), counted afterwards by reading ``$all`` with its filter.

Every reactor runs under :class:`~projections.ReactorRunner` (batches of 100, a lease, its
checkpoint in an SQLite read model file). The SQLite event store and the read model files run
``synchronous=NORMAL`` (``durable=False``), as in ``rebuild.py`` and ``compare.py``. ``client
CPU`` is the child's ``time.process_time()`` over the timed section (all its threads) per event
(per transfer for the transfer rate); ``server CPU`` the test server's utime + stime over the same
section (``/proc/<pid>/stat``, clock ticks: coarse on small runs). Every run checks its result
(every account got its bonus once, every transfer finished, the sum of balances unchanged).

A benchmark, not a test: the numbers depend on the machine and on what else runs on it. With
``--stores esdb`` the figures measure the test double and the adapter, not EventStoreDB.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from _common import print_markdown_table, quiet_logs, run_child
from _esdb_probe import server_cpu
from rebuild import seed_events

from escqrs.examples.bank.commands import CloseAccount, Deposit, OpenAccount, TransferMoney
from escqrs.examples.bank.handlers import account_repository, bank_bus
from escqrs.examples.bank.read_models import AccountList
from escqrs.examples.bank.transfers import TransferProcess, WelcomeBonus
from eventsourcing_cqrs.event_store import EventFilter, EventStore, read_after
from eventsourcing_cqrs.event_store.sqlite import SQLiteEventStore
from projections import ReactorRunner, StartFrom, rebuild
from projections.read_model_store import SQLiteReadModelStore

STORES = ("sqlite", "esdb")
WORKLOADS = ("rebuild", "reactor", "process")
#: The accounts transfers move money between (besides the closed ones); each starts with FUNDS.
TRANSFER_ACCOUNTS = 100
FUNDS = Decimal(1_000_000)
AMOUNT = Decimal("1.00")
BATCH_SIZE = 100  # ReactorRunner's default


@dataclass(frozen=True)
class Sizes:
    rebuild_events: int
    accounts: int
    transfers: int


FULL = Sizes(rebuild_events=20_000, accounts=5_000, transfers=2_000)
QUICK = Sizes(rebuild_events=5_000, accounts=500, transfers=200)


# =========================================================================================
# The child: one measurement
# =========================================================================================


@contextmanager
def _event_store(args: argparse.Namespace, directory: Path) -> Iterator[EventStore]:
    store: EventStore
    if args.child == "sqlite":
        store = SQLiteEventStore(directory / "events.db", durable=False)
    else:
        # An optional dependency (the esdb extra): imported only when asked for.
        from eventsourcing_cqrs.event_store.esdb import EsdbEventStore  # noqa: PLC0415

        store = EsdbEventStore(args.uri)
    try:
        yield store
    finally:
        store.close()


class _Timer:
    """Wall time, this process's CPU and the test server's CPU over one section."""

    def __init__(self, server_pid: int | None) -> None:
        self._pid = server_pid
        self.seconds = self.client_cpu = self.server_cpu = 0.0

    def _server(self) -> float:
        return server_cpu(self._pid) if self._pid else 0.0

    def time(self, action: Callable[[], Any]) -> Any:
        server, cpu, started = self._server(), time.process_time(), time.perf_counter()
        result = action()
        self.seconds = time.perf_counter() - started
        self.client_cpu = time.process_time() - cpu
        self.server_cpu = self._server() - server
        return result

    def figures(self) -> dict[str, float]:
        return {"seconds": self.seconds, "client_cpu": self.client_cpu, "server_cpu": self.server_cpu}


def _run_until_done(runner: ReactorRunner, events: EventStore) -> None:
    """Run until caught up, again while its own steps appended events it has not seen."""
    while True:
        runner.run(until_caught_up=True)
        checkpoint = runner.status().checkpoint or 0
        if events.head_position(runner.engine.event_filter()) <= checkpoint:
            return


def _delivered(events: EventStore, event_filter: EventFilter, after: int | None) -> int:
    return sum(1 for _ in read_after(events, after, filter=event_filter))


def _rebuild(events: EventStore, directory: Path, timer: _Timer, args: argparse.Namespace) -> dict[str, Any]:
    seed_events(events, args.size)
    views = SQLiteReadModelStore(directory / "views.db", durable=False)
    try:
        report = timer.time(lambda: rebuild(AccountList(), events, views, batch_size=1000))
    finally:
        views.close()
    assert report is not None
    assert report.events == args.size, f"rebuilt {report.events} events, not {args.size}"
    return {"events": report.events}


def _reactor(events: EventStore, directory: Path, timer: _Timer, args: argparse.Namespace) -> dict[str, Any]:
    bus = bank_bus(events)
    ids = [f"w{n:06d}" for n in range(args.size)]
    for account_id in ids:
        bus.dispatch(OpenAccount(account_id=account_id, owner="Bench"))
    views = SQLiteReadModelStore(directory / "reactors.db", durable=False)
    try:
        runner = ReactorRunner(
            WelcomeBonus(), events, views, bus=bus, start_from=StartFrom.BEGINNING, batch_size=BATCH_SIZE
        )
        timer.time(lambda: _run_until_done(runner, events))
        reacted = _delivered(events, runner.engine.event_filter(), None)
    finally:
        views.close()
    accounts = account_repository(events)
    for account_id in random.Random(1).sample(ids, min(len(ids), 50)):
        balance = accounts.load(account_id).balance
        assert balance == WelcomeBonus.bonus, f"{account_id} holds {balance}, not one bonus"
    deposits = _delivered(events, EventFilter.for_event_types(["MoneyDeposited"]), None)
    assert deposits == args.size, f"{deposits} bonuses for {args.size} accounts"
    return {"events": reacted}


def _process(events: EventStore, directory: Path, timer: _Timer, args: argparse.Namespace) -> dict[str, Any]:
    bus = bank_bus(events)
    funded = [f"a{n:03d}" for n in range(TRANSFER_ACCOUNTS)]
    closed = [f"c{n:03d}" for n in range(5)]
    for account_id in funded:
        bus.dispatch(OpenAccount(account_id=account_id, owner="Bench"))
        bus.dispatch(Deposit(account_id=account_id, amount=FUNDS))
    for account_id in closed:
        bus.dispatch(OpenAccount(account_id=account_id, owner="Closed"))
        bus.dispatch(CloseAccount(account_id=account_id))
    views = SQLiteReadModelStore(directory / "reactors.db", durable=False)
    try:
        runner = ReactorRunner(TransferProcess(), events, views, bus=bus, batch_size=BATCH_SIZE)
        runner.run(until_caught_up=True)  # from now: its checkpoint is the head, before the requests
        after = runner.status().checkpoint
        pick = random.Random(7)
        refused = 0
        for n in range(args.size):
            source = pick.choice(funded)
            if args.refused_every and n % args.refused_every == args.refused_every - 1:
                target, refused = pick.choice(closed), refused + 1
            else:
                target = pick.choice([a for a in funded if a != source])
            bus.dispatch(TransferMoney(transfer_id=f"t{n:06d}", source=source, target=target, amount=AMOUNT))
        timer.time(lambda: _run_until_done(runner, events))
        reacted = _delivered(events, runner.engine.event_filter(), after)
    finally:
        views.close()

    def count(event_type: str) -> int:
        return _delivered(events, EventFilter.for_event_types([event_type]), None)

    completed, compensated = count("TransferCompleted"), count("TransferCompensated")
    assert (completed, compensated) == (args.size - refused, refused), (
        f"{completed} completed and {compensated} compensated of {args.size} transfers ({refused} refused)"
    )
    accounts = account_repository(events)
    total = sum((accounts.load(a).balance for a in funded), Decimal(0))
    assert total == FUNDS * len(funded), f"the balances sum to {total}, not {FUNDS * len(funded)}"
    return {"events": reacted, "transfers": args.size, "compensated": refused}


def child(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process; its figures as the last line of output (JSON)."""
    workloads = {"rebuild": _rebuild, "reactor": _reactor, "process": _process}
    timer = _Timer(args.server_pid)
    with tempfile.TemporaryDirectory(prefix="reactors-bench-", dir=args.workdir) as name:
        directory = Path(name)
        with _event_store(args, directory) as events:
            counts = workloads[args.workload](events, directory, timer, args)
    print(json.dumps({**counts, **timer.figures()}))


# =========================================================================================
# The parent: one child per (store, workload), the table
# =========================================================================================


def _measure(store: str, workload: str, size: int, args: argparse.Namespace) -> dict[str, Any]:
    options = ["--workload", workload, "--size", str(size), "--refused-every", str(args.refused_every)]
    if args.workdir:
        options += ["--workdir", args.workdir]
    if store == "sqlite":
        return run_child(Path(__file__), "--child", "sqlite", *options)
    from eventsourcing_cqrs.testing.esdb_server import EsdbServerProcess  # noqa: PLC0415

    with EsdbServerProcess(strict=True) as server:  # as the test fixture runs it
        return run_child(
            Path(__file__), "--child", "esdb", "--uri", server.uri, "--server-pid", str(server.pid), *options
        )


def _rows(store: str, workload: str, measured: dict[str, Any]) -> list[tuple[str, ...]]:
    seconds, events = measured["seconds"], measured["events"]

    def row(label: str, counted: str, count: int, digits: int = 0) -> tuple[str, ...]:
        client = f"{measured['client_cpu'] * 1e6 / count:,.0f}"
        server = f"{measured['server_cpu'] * 1e6 / count:,.0f}" if store == "esdb" else "—"
        rate = f"{count / seconds:,.{digits}f}"
        return (store, label, counted, f"{count:,}", f"{seconds:.2f}", rate, client, server)

    if workload == "rebuild":
        return [row("projection rebuild (AccountList)", "events", events)]
    if workload == "reactor":
        return [row("stateless reactor (WelcomeBonus)", "events reacted to", events)]
    return [
        row("process manager (TransferProcess)", "transfers finished", measured["transfers"], 1),
        row("", "events reacted to", events),
    ]


def _print_table(rows: list[tuple[str, ...]]) -> None:
    header = (
        "store",
        "workload",
        "counted",
        "count",
        "seconds",
        "per second",
        "client CPU µs",
        "server CPU µs",
    )
    print_markdown_table(header, rows, right={3, 4, 5, 6, 7})


def measure(args: argparse.Namespace) -> None:
    sizes = QUICK if args.quick else FULL
    size_of = {
        "rebuild": args.rebuild_events or sizes.rebuild_events,
        "reactor": args.accounts or sizes.accounts,
        "process": args.transfers or sizes.transfers,
    }
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    rows: list[tuple[str, ...]] = []
    failures: list[str] = []
    compensated: int | None = None
    for store in stores:
        for workload in WORKLOADS:
            print(f"{store}: {workload} ({size_of[workload]:,}) ...", flush=True)
            try:
                measured = _measure(store, workload, size_of[workload], args)
            except RuntimeError as exc:  # report it, keep the other rows' numbers
                failures.append(f"{store} {workload}: {str(exc).strip().splitlines()[-1]}")
                continue
            rows.extend(_rows(store, workload, measured))
            if workload == "process":
                compensated = int(measured["compensated"])
    print()
    print(
        f"Reactor throughput beside the projection rebuild (batches of {BATCH_SIZE} for reactors, 1000 "
        "for the rebuild; SQLite synchronous=NORMAL; esdb: the EventStoreDB test server in its own process)"
    )
    print()
    _print_table(rows)
    if compensated is not None:
        print()
        print(
            f"- process manager: {size_of['process']:,} transfers between {TRANSFER_ACCOUNTS} accounts, "
            f"{compensated:,} of them to a closed account (compensated). Its events reacted to are every "
            "event its subscription delivered: per completed transfer 5 (the request, the withdrawal and "
            "the deposit it handles, and the deadline's scheduled and cancelled events it indexes), per "
            "compensated one 6 (the refusal and the refund besides). CPU columns: per transfer on its row, "
            "per event on the events row."
        )
    for failure in failures:
        print(f"- failed: {failure}")
    if failures:
        raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--stores", default=",".join(STORES), help="comma-separated: sqlite, esdb")
    parser.add_argument(
        "--rebuild-events", type=int, help=f"events rebuilt (default {FULL.rebuild_events:,})"
    )
    parser.add_argument("--accounts", type=int, help=f"accounts the reactor pays (default {FULL.accounts:,})")
    parser.add_argument("--transfers", type=int, help=f"transfers (default {FULL.transfers:,})")
    parser.add_argument("--refused-every", type=int, default=10, help="one transfer in N to a closed account")
    parser.add_argument("--workdir", help="where the SQLite files go (default: the system's temp dir)")
    parser.add_argument("--child", choices=STORES, help=argparse.SUPPRESS)
    parser.add_argument("--workload", choices=WORKLOADS, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--uri", help=argparse.SUPPRESS)
    parser.add_argument("--server-pid", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    quiet_logs()
    if args.child:
        child(args)
    else:
        measure(args)


if __name__ == "__main__":
    main()
