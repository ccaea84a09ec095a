"""Test helpers shipped with the framework, for this project's tests and for users' own.

* :func:`given` / :class:`HandlerScenario`: given/when/then for aggregates and command handlers.
* :class:`ReactorScenario` / :class:`ProcessScenario` with a :class:`FakeClock`: given/when/then
  for reactors and process managers (:mod:`eventsourcing_cqrs.testing.reactions`).
* :mod:`eventsourcing_cqrs.testing.contracts`: ``EventStoreContract``, the suite every event
  store adapter passes (imports pytest, so it is not re-exported here).
* :mod:`eventsourcing_cqrs.testing.esdb_server`: an in-process EventStoreDB-compatible gRPC
  server, a test double for the EventStoreDB path without Docker.
"""

from eventsourcing_cqrs.testing.given import (
    AggregateOutcome,
    AggregateScenario,
    HandlerOutcome,
    HandlerScenario,
    given,
)
from eventsourcing_cqrs.testing.reactions import FakeClock, ProcessScenario, ReactionOutcome, ReactorScenario

__all__ = [
    "AggregateOutcome",
    "AggregateScenario",
    "FakeClock",
    "HandlerOutcome",
    "HandlerScenario",
    "ProcessScenario",
    "ReactionOutcome",
    "ReactorScenario",
    "given",
]
