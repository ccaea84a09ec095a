"""Test helpers shipped with the framework, for this project's tests and for users' own.

* :func:`given` / :class:`HandlerScenario`: given/when/then for aggregates and command handlers.
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

__all__ = ["AggregateOutcome", "AggregateScenario", "HandlerOutcome", "HandlerScenario", "given"]
