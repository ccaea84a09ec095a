"""Reactors and process managers: what happens *because* something happened.

* :class:`Reactor` - a stateless policy: handlers per event type return the commands to
  dispatch ("when a large deposit is made, flag the account").
* :class:`ProcessManager` with its :class:`Process` - a stateful saga per correlation key
  ("move money from A to B; refund A if B refuses; give up after five minutes"), whose state,
  decisions, commands' outcomes and deadlines are events of its own stream.
* :mod:`~eventsourcing_cqrs.reactions.engine` - the effectively-once path for one event.

Both are run by :class:`projections.ReactorRunner`, which follows ``$all`` with the projection
runner's guarantees (batches, a lease per name, retries, stop or park, status). Test them with
:mod:`eventsourcing_cqrs.testing.reactions` (given / when / then, and a fake clock).
"""

from eventsourcing_cqrs.reactions._clock import Clock, system_clock
from eventsourcing_cqrs.reactions.engine import (
    FireOutcome,
    ProcessEngine,
    ReactionEngine,
    ReactorEngine,
    engine_for,
)
from eventsourcing_cqrs.reactions.process import (
    CommandRefusal,
    Deadline,
    Process,
    ProcessCommandIssued,
    ProcessCommandRefused,
    ProcessCommandSucceeded,
    ProcessDeadlineCancelled,
    ProcessDeadlineFired,
    ProcessDeadlineScheduled,
    ProcessEvent,
    ProcessFinished,
    ProcessManager,
    process_events,
)
from eventsourcing_cqrs.reactions.reactor import (
    Reaction,
    ReactionContext,
    ReactionDefinitionError,
    Reactor,
    reaction_command_id,
)

__all__ = [
    "Clock",
    "CommandRefusal",
    "Deadline",
    "FireOutcome",
    "Process",
    "ProcessCommandIssued",
    "ProcessCommandRefused",
    "ProcessCommandSucceeded",
    "ProcessDeadlineCancelled",
    "ProcessDeadlineFired",
    "ProcessDeadlineScheduled",
    "ProcessEngine",
    "ProcessEvent",
    "ProcessFinished",
    "ProcessManager",
    "Reaction",
    "ReactionContext",
    "ReactionDefinitionError",
    "ReactionEngine",
    "Reactor",
    "ReactorEngine",
    "engine_for",
    "process_events",
    "reaction_command_id",
    "system_clock",
]
