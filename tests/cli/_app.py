"""An application spec for the projection commands' tests: the bank, with one projection that can
be made to fail (to park events) and to go slowly (to interrupt a rebuild).

* ``CLI_POISON_MARKER``: while the file it names exists, opening an account for ``Poison`` fails
  (or, when ``CLI_POISON_ACCOUNT`` is set, opening the account it names, and no other).
* ``CLI_SLOW_SECONDS``: every handled event takes this long.

Loaded by the subprocesses as ``--app cli._app:app`` (``tests`` is on their ``PYTHONPATH``);
``--app cli._app:segmented`` is the same with a segmented projection instead
(:class:`SegmentedBalances`, ``segments = 4``), and ``cli._app:segmented_stopping`` the same
projection with the ``STOP`` policy.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import ClassVar

from escqrs.app import AppSpec
from escqrs.examples.bank.app import bank
from escqrs.examples.bank.events import AccountOpened, MoneyDeposited, MoneyWithdrawn, registry
from projections import Backoff, EventContext, FailurePolicy, Projection, TableSpec

__all__ = [
    "BALANCES",
    "SEGMENTED",
    "Balances",
    "SegmentedBalances",
    "StoppingSegmentedBalances",
    "app",
    "segmented",
    "segmented_stopping",
]

#: The name of the test projection.
BALANCES = "cli_balances"
#: The name of the segmented test projection.
SEGMENTED = "cli_segmented_balances"


def _pause() -> None:
    delay = float(os.environ.get("CLI_SLOW_SECONDS") or 0)
    if delay:
        time.sleep(delay)


class Balances(Projection):
    """Balance per account; parks what fails, after one attempt."""

    name = BALANCES
    version = 1
    tables: ClassVar[tuple[TableSpec, ...]] = (TableSpec("balances", indexes=("owner",)),)
    failure_policy = FailurePolicy.PARK
    backoff = Backoff(max_attempts=1, base_delay=0)

    def __init__(self) -> None:
        super().__init__()
        self.on(AccountOpened, self.opened)
        self.on(MoneyDeposited, self.moved)
        self.on(MoneyWithdrawn, self.moved)

    def opened(self, event: AccountOpened, context: EventContext) -> None:
        _pause()
        marker = os.environ.get("CLI_POISON_MARKER")
        account = os.environ.get("CLI_POISON_ACCOUNT")
        poisoned = event.account_id == account if account else event.owner == "Poison"
        if poisoned and marker and Path(marker).exists():
            raise RuntimeError(f"account {event.account_id} is poisoned")
        context.table("balances").put(event.account_id, {"owner": event.owner, "balance": "0"})

    def moved(self, event: MoneyDeposited | MoneyWithdrawn, context: EventContext) -> None:
        _pause()
        balances = context.table("balances")
        if balances.get(event.account_id) is not None:
            balances.update(event.account_id, {"balance": str(event.balance)})


app = AppSpec(
    name="cli-test",
    registry=registry,
    aggregates=bank.aggregates,
    projections=(Balances,),
)


class SegmentedBalances(Balances):
    """:class:`Balances` split into four segments (each account's events stay in one)."""

    name = SEGMENTED
    segments = 4


#: The test application with the segmented projection (and no other).
segmented = AppSpec(
    name="cli-test-segmented",
    registry=registry,
    aggregates=bank.aggregates,
    projections=(SegmentedBalances,),
)


class StoppingSegmentedBalances(SegmentedBalances):
    """:class:`SegmentedBalances` that stops (the default policy) where the other parks."""

    failure_policy = FailurePolicy.STOP


#: The segmented projection whose failing event stops its worker.
segmented_stopping = AppSpec(
    name="cli-test-segmented-stopping",
    registry=registry,
    aggregates=bank.aggregates,
    projections=(StoppingSegmentedBalances,),
)
