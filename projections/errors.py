"""The read side's exceptions, rooted at :class:`~eventsourcing_cqrs.errors.CQRSError`.

Messages are full sentences naming the projection, table, event or field at fault; the same
values are kept as attributes so callers never parse messages.

::

    CQRSError
    └── ProjectionError                                 something the read side reports
        ├── InvalidNameError (ValueError)               a projection, table or field name is unsafe in SQL
        ├── ProjectionDefinitionError (TypeError)       a projection class is declared wrongly
        ├── ProjectionFailedError                       an event kept failing; the runner stopped
        ├── ProjectionVersionError                      a newer version of the projection is already live
        ├── WaitTimeoutError (TimeoutError)             wait_for gave up before the projection got there
        ├── ProjectionHaltedError                       wait_for found the projection's runner failed
        ├── ProjectionRunningError                      a runner holds the lease of a projection to drop
        ├── LeaseLostError                              another runner took the projection over
        ├── GenerationChangedError                      the generation being written was switched or dropped
        ├── RunnerAlreadyRunningError (RuntimeError)    start() on a runner whose thread still runs
        ├── ParkedEventNotFoundError (LookupError)
        └── ReadModelStoreError                         something the read model store reported
            ├── UnknownTableError (LookupError)         the projection did not declare this table
            ├── DocumentNotFoundError (LookupError)     update of a key that holds no document
            ├── ProjectionNotFoundError (LookupError)   no live generation to query yet
            ├── UnsupportedOperationError (NotImplementedError)  e.g. raw SQL on the memory store
            ├── ReadModelStoreUnavailableError (ConnectionError)
            │   └── ReadModelStoreRefusedError          the server refused the login for good
            ├── NotAReadModelStoreError                 the file or database holds something else
            └── ReadModelStoreLockedError               another connection held the database too long
"""

from __future__ import annotations

from eventsourcing_cqrs.errors import CQRSError

__all__ = [
    "DocumentNotFoundError",
    "GenerationChangedError",
    "InvalidNameError",
    "LeaseLostError",
    "NotAReadModelStoreError",
    "ParkedEventNotFoundError",
    "ProjectionDefinitionError",
    "ProjectionError",
    "ProjectionFailedError",
    "ProjectionHaltedError",
    "ProjectionNotFoundError",
    "ProjectionRunningError",
    "ProjectionVersionError",
    "ReadModelStoreError",
    "ReadModelStoreLockedError",
    "ReadModelStoreRefusedError",
    "ReadModelStoreUnavailableError",
    "RunnerAlreadyRunningError",
    "UnknownTableError",
    "UnsupportedOperationError",
    "WaitTimeoutError",
]


class ProjectionError(CQRSError):
    """Root of the read side's exceptions."""


class InvalidNameError(ProjectionError, ValueError):
    """A name that becomes part of an SQL identifier is not safe; nothing was written.

    ``kind`` says what was named (``"projection name"``, ``"table name"``, ``"field name"``).
    """

    def __init__(self, kind: str, name: object, rule: str) -> None:
        self.kind = kind
        self.name = name
        self.rule = rule
        super().__init__(f"Invalid {kind} {name!r}: {rule}.")


class ProjectionDefinitionError(ProjectionError, TypeError):
    """A projection class is declared wrongly (no name, two handlers for one event type, ...)."""

    def __init__(self, projection: str, problem: str) -> None:
        self.projection = projection
        self.problem = problem
        super().__init__(f"Projection {projection}: {problem}.")


class ProjectionFailedError(ProjectionError):
    """An event kept failing after every retry and the projection's policy is to stop.

    The checkpoint stays just before the event, so a restart (after a fix) retries it. The
    handler's exception is ``__cause__`` and also kept as ``error``.
    """

    def __init__(
        self,
        projection: str,
        *,
        event_type: str,
        stream: str,
        revision: int,
        position: int,
        attempts: int,
        error: BaseException,
        kind: str = "Projection",
    ) -> None:
        self.projection = projection
        self.event_type = event_type
        self.stream = stream
        self.revision = revision
        self.position = position
        self.attempts = attempts
        self.error = error
        super().__init__(
            f"{kind} {projection!r} stopped: event {event_type!r} at revision {revision} of "
            f"stream {stream!r} (position {position}) failed {attempts} time(s): "
            f"{type(error).__name__}: {error}"
        )


class ProjectionVersionError(ProjectionError):
    """The store's live generation was built by a newer version of the projection's code."""

    def __init__(self, projection: str, code_version: int, live_version: int) -> None:
        self.projection = projection
        self.code_version = code_version
        self.live_version = live_version
        super().__init__(
            f"Projection {projection!r} version {live_version} is live, but this code has version "
            f"{code_version}; an older deployment must not write a newer read model."
        )


class WaitTimeoutError(ProjectionError, TimeoutError):
    """:func:`~projections.status.wait_for` gave up before the projection reached the position."""

    def __init__(self, projection: str, position: int, checkpoint: int | None, timeout: float) -> None:
        self.projection = projection
        self.position = position
        self.checkpoint = checkpoint
        self.timeout = timeout
        super().__init__(
            f"Projection {projection!r} did not reach position {position} within {timeout:g} s "
            f"(its checkpoint is {checkpoint})."
        )


class ProjectionHaltedError(ProjectionError):
    """:func:`~projections.status.wait_for` found that the projection's runner failed.

    The read model will not reach ``position`` until the runner is fixed and restarted, so
    waiting on would only time out. ``error`` is what the runner recorded (the store's last
    error); :meth:`~projections.runner.ProjectionRunner.wait_for` raises the runner's own
    exception instead when it has it.
    """

    def __init__(self, projection: str, position: int, checkpoint: int | None, error: str | None) -> None:
        self.projection = projection
        self.position = position
        self.checkpoint = checkpoint
        self.error = error
        super().__init__(
            f"Projection {projection!r} will not reach position {position}: its runner failed at "
            f"checkpoint {checkpoint}: {error or 'no error was recorded'}"
        )


class ProjectionRunningError(ProjectionError):
    """A runner (in some process) holds the projection's lease, so it cannot be dropped now."""

    def __init__(self, projection: str, role: str) -> None:
        self.projection = projection
        self.role = role
        super().__init__(
            f"Projection {projection!r} is in use: a runner holds its {role} lease; stop it first."
        )


class LeaseLostError(ProjectionError):
    """Another runner acquired the projection's lease since this one did; this one must stop."""

    def __init__(self, projection: str, role: str, epoch: int, current: int) -> None:
        self.projection = projection
        self.role = role
        self.epoch = epoch
        self.current = current
        super().__init__(
            f"Projection {projection!r} {role} lease epoch {epoch} was superseded by epoch {current}; "
            "another runner took over."
        )


class GenerationChangedError(ProjectionError):
    """The generation a transaction wanted to write is no longer live or being built."""

    def __init__(self, projection: str, generation: int) -> None:
        self.projection = projection
        self.generation = generation
        super().__init__(
            f"Generation {generation} of projection {projection!r} is no longer live or being built."
        )


class RunnerAlreadyRunningError(ProjectionError, RuntimeError):
    """:meth:`~projections.runner.ProjectionRunner.start` was called while its thread still runs."""

    def __init__(self, projection: str) -> None:
        self.projection = projection
        super().__init__(f"Projection runner {projection!r} is already running.")


class ParkedEventNotFoundError(ProjectionError, LookupError):
    """No parked event of this projection is at this position (or under this sequencing key)."""

    def __init__(self, projection: str, position: int | None = None, *, key: str | None = None) -> None:
        self.projection = projection
        self.position = position
        self.key = key
        where = f"at position {position}" if key is None else f"under the key {key!r}"
        super().__init__(f"Projection {projection!r} has no parked event {where}.")


class ReadModelStoreError(ProjectionError):
    """Something the read model store reported."""


class UnknownTableError(ReadModelStoreError, LookupError):
    """A table that the projection did not declare in ``tables``."""

    def __init__(self, projection: str, table: str) -> None:
        self.projection = projection
        self.table = table
        super().__init__(f"Projection {projection!r} has no table {table!r}; declare it in its tables.")


class DocumentNotFoundError(ReadModelStoreError, LookupError):
    """An update named a key that holds no document."""

    def __init__(self, table: str, key: str) -> None:
        self.table = table
        self.key = key
        super().__init__(f"Table {table!r} has no document with key {key!r}.")


class ProjectionNotFoundError(ReadModelStoreError, LookupError):
    """The projection has no live generation yet (it never ran on this store)."""

    def __init__(self, projection: str) -> None:
        self.projection = projection
        super().__init__(f"Projection {projection!r} has no live read model in this store yet.")


class UnsupportedOperationError(ReadModelStoreError, NotImplementedError):
    """The adapter cannot do this (raw SQL on the memory store, a lease across processes, ...)."""

    def __init__(self, adapter: str, operation: str) -> None:
        self.adapter = adapter
        self.operation = operation
        super().__init__(f"{adapter} does not support {operation}.")


class ReadModelStoreUnavailableError(ReadModelStoreError, ConnectionError):
    """The read model database cannot be reached."""


class ReadModelStoreRefusedError(ReadModelStoreUnavailableError):
    """The database server is up but refused the login for good (no such database or role, a
    wrong password, no permission): waiting would not help, so it is reported at once."""


class NotAReadModelStoreError(ReadModelStoreError):
    """The database opened as a read model store holds something else (an event store, ...).

    Nothing was written to it. ``path`` names it and ``holds`` says what it seems to hold.
    """

    def __init__(self, path: str, holds: str) -> None:
        self.path = path
        self.holds = holds
        super().__init__(f"{path} is {holds}, not a read model store; nothing was written to it.")


class ReadModelStoreLockedError(ReadModelStoreError):
    """Another connection kept the database locked longer than the busy timeout."""
