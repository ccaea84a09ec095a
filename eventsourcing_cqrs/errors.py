"""The framework's exceptions: one root, messages that name what is at fault.

Every exception raised by this package derives from :class:`CQRSError`. Messages are full
sentences naming the stream, version, event type or field at fault, and the same values are
kept as attributes so callers never parse messages. Where the meaning matches a builtin, the
exception also derives from it (``ValueError``, ``TimeoutError``, ``ConnectionError``).

::

    CQRSError
    ├── InvalidInputError (ValueError)            a stream name, revision, id or payload is malformed
    ├── EventStoreError                           something the event store reported
    │   ├── WrongExpectedVersionError             the stream is not at the version the writer expected
    │   ├── StreamNotFoundError                   the stream has no events (never written, or soft-deleted)
    │   ├── StreamDeletedError                    the stream was tombstoned (or deleted, for STREAM_EXISTS)
    │   ├── EventStoreUnavailableError (ConnectionError)
    │   ├── EventStoreTimeoutError (TimeoutError)
    │   ├── EventStoreTLSError                    the client's TLS set-up does not match the server's
    │   ├── EventStoreAuthenticationError         the server refused the credentials (user, password)
    │   ├── EventStoreAccessDeniedError (PermissionError)  the user may not do this (stream ACLs)
    │   ├── EventStoreLockedError                 another process holds the database lock too long
    │   ├── EventStoreCorruptedError              the database file is not a valid event store
    │   └── SubscriptionStoppedError              iteration continued after ``stop()``
    ├── SerializationError                        a stored event cannot become a domain event
    │   ├── UnknownEventTypeError
    │   ├── CorruptEventError
    │   └── UpcastError
    ├── DomainError                               an aggregate refused a decision (subclass per rule)
    ├── CommandValidationError (ValueError)       a command's fields are invalid
    ├── HandlerNotFoundError (LookupError)        no handler registered for a command or query type
    ├── AuthorizationError (PermissionError)      the actor may not issue this command
    ├── AggregateNotFoundError (LookupError)
    │   └── NoEventsAtTimeError                   the stream's first event is later than the time asked
    ├── AggregateAlreadyExistsError
    └── ConcurrencyRetriesExhaustedError          a command conflicted on every attempt

The read side (``projections``) roots its own errors at :class:`CQRSError` too.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AggregateAlreadyExistsError",
    "AggregateNotFoundError",
    "AuthorizationError",
    "CQRSError",
    "CommandValidationError",
    "ConcurrencyRetriesExhaustedError",
    "CorruptEventError",
    "DomainError",
    "EventStoreAccessDeniedError",
    "EventStoreAuthenticationError",
    "EventStoreCorruptedError",
    "EventStoreError",
    "EventStoreLockedError",
    "EventStoreTLSError",
    "EventStoreTimeoutError",
    "EventStoreUnavailableError",
    "HandlerNotFoundError",
    "InvalidInputError",
    "NoEventsAtTimeError",
    "SerializationError",
    "StreamDeletedError",
    "StreamNotFoundError",
    "SubscriptionStoppedError",
    "UnknownEventTypeError",
    "UpcastError",
    "WrongExpectedVersionError",
]


class CQRSError(Exception):
    """Root of every exception this framework raises."""


class InvalidInputError(CQRSError, ValueError):
    """A value passed to the framework is malformed; nothing was written.

    ``field`` names the parameter and ``value`` holds the offending value.
    """

    def __init__(self, field: str, value: Any, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"Invalid {field} {shown}: {reason}.")


# --------------------------------------------------------------------------- event store


class EventStoreError(CQRSError):
    """Something the event store reported."""


def _describe_version(version: object) -> str:
    if version is None:
        return "no stream"
    return str(version)


class WrongExpectedVersionError(EventStoreError):
    """The stream was not at the version the writer expected; nothing was written.

    ``actual`` is the stream's last revision, or ``None`` when the stream has never had events.
    As on EventStoreDB, a soft-deleted stream reports its last revision before deletion.
    """

    def __init__(self, stream: str, expected: object, actual: int | None) -> None:
        self.stream = stream
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"Append to stream {stream!r} expected version {_describe_version(expected)} "
            f"but the stream is at {_describe_version(actual)}."
        )


class StreamNotFoundError(EventStoreError, LookupError):
    """The stream has no readable events: it was never written, or it was soft-deleted."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        super().__init__(f"Stream {stream!r} was not found.")


class StreamDeletedError(EventStoreError):
    """The stream is tombstoned (or soft-deleted and written with ``STREAM_EXISTS``)."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        super().__init__(f"Stream {stream!r} is deleted.")


class EventStoreUnavailableError(EventStoreError, ConnectionError):
    """The event store cannot be reached."""


class EventStoreTimeoutError(EventStoreError, TimeoutError):
    """An event store operation did not finish within its deadline."""


class EventStoreTLSError(EventStoreError):
    """The client and the server do not agree on TLS: a plaintext client and a TLS server (or the
    reverse), or a server certificate the client's CA does not vouch for. Retrying cannot help."""


class EventStoreAuthenticationError(EventStoreError):
    """The event store refused the credentials: an unknown user or a wrong password.

    ``targets`` names the servers (never the credentials), ``user`` the user name if known.
    """

    def __init__(self, targets: str, user: str | None, operation: str) -> None:
        self.targets = targets
        self.user = user
        self.operation = operation
        who = f"user {user!r}" if user else "the connection string's user"
        super().__init__(
            f"EventStoreDB at {targets} refused the credentials of {who} ({operation}): the user "
            "does not exist or the password is wrong; fix user:password in the connection string."
        )


class EventStoreAccessDeniedError(EventStoreError, PermissionError):
    """The event store authenticated the user but denies it the operation (access control lists).

    ``stream`` is the stream (``$all`` for the whole log) when known.
    """

    def __init__(self, targets: str, user: str | None, operation: str, stream: str | None) -> None:
        self.targets = targets
        self.user = user
        self.operation = operation
        self.stream = stream
        who = f"user {user!r}" if user else "this user"
        if stream == "$all":
            fix = "reading $all (and subscribing to it) needs a user in $admins"
        elif stream is not None and stream.startswith("$"):
            fix = f"{stream!r} is a system stream: by default only $admins may use it"
        else:
            fix = "grant it in the stream's $acl metadata (or $userStreamAcl in $settings)"
        super().__init__(f"EventStoreDB at {targets} denied {operation} to {who}: {fix}.")


class EventStoreLockedError(EventStoreError):
    """The database stayed locked by another connection longer than the busy timeout."""


class EventStoreCorruptedError(EventStoreError):
    """The database file exists but is not a valid event store."""


class SubscriptionStoppedError(EventStoreError):
    """A subscription was read from after it had been stopped."""


# --------------------------------------------------------------------------- serialization


class SerializationError(CQRSError):
    """A stored event could not be turned into a domain event.

    ``stream``, ``revision`` and ``event_type`` locate the stored event when known.
    """

    def __init__(
        self,
        message: str,
        *,
        stream: str | None = None,
        revision: int | None = None,
        event_type: str | None = None,
    ) -> None:
        self.stream = stream
        self.revision = revision
        self.event_type = event_type
        where = ""
        if stream is not None:
            where = f" (stream {stream!r}, revision {revision}, type {event_type!r})"
        super().__init__(message + where)


class UnknownEventTypeError(SerializationError):
    """No event class is registered for a stored event's type name."""


class CorruptEventError(SerializationError):
    """A stored event's payload is not valid JSON or does not validate."""


class UpcastError(SerializationError):
    """An upcaster failed or produced a payload of the wrong shape."""


# --------------------------------------------------------------------------- write side


class DomainError(CQRSError):
    """An aggregate refused a command because it would break a business rule.

    Subclass it once per rule so that callers can tell the rules apart.
    """


class CommandValidationError(CQRSError, ValueError):
    """A command's fields are invalid; ``errors`` lists ``(field, reason)`` pairs."""

    def __init__(self, command_type: str, errors: list[tuple[str, str]]) -> None:
        self.command_type = command_type
        self.errors = errors
        details = "; ".join(f"{field}: {reason}" for field, reason in errors)
        super().__init__(f"Invalid {command_type} command: {details}.")


class HandlerNotFoundError(CQRSError, LookupError):
    """No handler is registered for a message type."""

    def __init__(self, message_type: str, kind: str = "command") -> None:
        self.message_type = message_type
        super().__init__(f"No handler is registered for {kind} type {message_type!r}.")


class AuthorizationError(CQRSError, PermissionError):
    """The actor is not allowed to issue the command."""

    def __init__(self, actor: str | None, command_type: str, reason: str = "") -> None:
        self.actor = actor
        self.command_type = command_type
        suffix = f": {reason}" if reason else ""
        super().__init__(f"Actor {actor!r} may not issue {command_type}{suffix}.")


class AggregateNotFoundError(CQRSError, LookupError):
    """No aggregate exists with this id."""

    def __init__(self, aggregate_type: str, aggregate_id: str) -> None:
        self.aggregate_type = aggregate_type
        self.aggregate_id = aggregate_id
        super().__init__(f"{aggregate_type} {aggregate_id!r} does not exist.")


class NoEventsAtTimeError(AggregateNotFoundError):
    """The state was asked as of a time before the stream's first event."""

    def __init__(
        self, aggregate_type: str, aggregate_id: str, stream: str, at_time: Any, first_at: Any
    ) -> None:
        super().__init__(aggregate_type, aggregate_id)
        self.stream = stream
        self.at_time = at_time
        self.first_recorded_at = first_at
        self.args = (
            f"Stream {stream!r} has no events at or before {at_time.isoformat()} "
            f"(its first event was recorded at {first_at.isoformat()}).",
        )

    def __str__(self) -> str:
        return str(self.args[0])


class AggregateAlreadyExistsError(CQRSError):
    """An aggregate was created with an id that is already taken."""

    def __init__(self, aggregate_type: str, aggregate_id: str) -> None:
        self.aggregate_type = aggregate_type
        self.aggregate_id = aggregate_id
        super().__init__(f"{aggregate_type} {aggregate_id!r} already exists.")


class ConcurrencyRetriesExhaustedError(CQRSError):
    """A command kept conflicting with concurrent writers and ran out of attempts."""

    def __init__(self, command_type: str, stream: str, attempts: int) -> None:
        self.command_type = command_type
        self.stream = stream
        self.attempts = attempts
        super().__init__(
            f"{command_type} conflicted on stream {stream!r} on all {attempts} attempts; "
            "give up or raise the retry limit."
        )
