"""An application spec for the secrets tests: a projection whose handler fails on every event.

The handler's message names nothing of the event, so that whatever of the payload reaches the
output got there through a traceback's local variables. Also a class at module level, so that
``--app cli._secret_app:Leaky`` points at a class.

Loaded by the subprocesses as ``--app cli._secret_app:app`` (``tests`` is on their ``PYTHONPATH``).
"""

from __future__ import annotations

from typing import ClassVar

from escqrs.app import AppSpec
from escqrs.examples.bank.app import bank
from escqrs.examples.bank.events import AccountOpened, registry
from projections import Backoff, EventContext, FailurePolicy, Projection, TableSpec

__all__ = ["FAILING", "Failing", "app", "make_app"]

#: The name of the failing projection.
FAILING = "cli_failing"


class Failing(Projection):
    """Fails on every account opening, and stops the runner (after one attempt)."""

    name = FAILING
    version = 1
    tables: ClassVar[tuple[TableSpec, ...]] = (TableSpec("owners"),)
    failure_policy = FailurePolicy.STOP
    backoff = Backoff(max_attempts=1, base_delay=0)

    def __init__(self) -> None:
        super().__init__()
        self.on(AccountOpened, self.opened)

    def opened(self, event: AccountOpened, context: EventContext) -> None:
        owner = event.owner  # a local variable holding the payload: a traceback with locals shows it
        context.table("owners").put(event.account_id, {"owner": owner})
        raise RuntimeError("the failing projection fails on purpose")


app = AppSpec(
    name="cli-secrets",
    registry=registry,
    aggregates=bank.aggregates,
    projections=(Failing,),
)


def make_app() -> AppSpec:
    """A factory returning the spec: ``--app cli._secret_app:make_app`` is called."""
    return app
