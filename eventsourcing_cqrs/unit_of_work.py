"""The context of the command being handled, shared by the command bus and the repositories.

The :class:`~eventsourcing_cqrs.bus.CommandBus` opens a unit of work for each attempt at a
command; a :class:`~eventsourcing_cqrs.repository.Repository` used inside it

* derives each new event's id from the command id (``uuid5(command_id, "{stream}/{n}")``), so
  an attempt that is repeated writes the same ids and the store's idempotent append writes
  nothing twice;
* writes the command's :class:`~eventsourcing_cqrs.messages.Metadata` (correlation and
  causation ids, command id, actor) beside each event;
* notices, while replaying, that the stream already holds this command's events (the command
  was delivered before) and stops the handler with :class:`CommandAlreadyHandled`;
* holds the one save a command may make until the handler returns, then appends it
  (:meth:`UnitOfWork.commit`): a handler that saves a second aggregate is refused at that
  second save, before anything is written, so a command never leaves a partial write;
* records the append, so the bus can report the stream, new version and commit position.

The context travels in a :class:`contextvars.ContextVar`, so domain code never passes it
around, and a command dispatched from inside a handler inherits the correlation id.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from hashlib import sha1

import pydantic_core

from eventsourcing_cqrs.errors import CQRSError, InvalidInputError
from eventsourcing_cqrs.event_store.port import AppendResult
from eventsourcing_cqrs.messages import (
    ACTOR_KEY,
    CAUSATION_ID_KEY,
    COMMAND_ID_KEY,
    CORRELATION_ID_KEY,
    SCHEMA_VERSION_KEY,
    Metadata,
)

__all__ = [
    "CommandAlreadyHandled",
    "CommandContext",
    "UnitOfWork",
    "begin_unit_of_work",
    "current_unit_of_work",
    "derive_event_id",
    "end_unit_of_work",
    "unit_of_work",
]


#: The bits of a SHA-1 digest's first 16 bytes that a version 5 UUID keeps, and the version and
#: RFC 4122 variant bits it sets (as ``uuid.uuid5`` does).
_KEPT_BITS = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_VERSION_5_BITS = (5 << 76) | (0x8000 << 48)


def derive_event_id(command_id: uuid.UUID, stream: str, index: int) -> uuid.UUID:
    """The id of the ``index``-th event (from 0) that command ``command_id`` writes to ``stream``.

    ``uuid5(command_id, f"{stream}/{index}")``, computed without ``uuid5``'s argument checks.
    """
    digest = sha1(command_id.bytes + f"{stream}/{index}".encode(), usedforsecurity=False).digest()
    return uuid.UUID(int=(int.from_bytes(digest[:16]) & _KEPT_BITS) | _VERSION_5_BITS)


@dataclass(frozen=True, slots=True)
class CommandContext:
    """Who asked for a command and why: the ids and actor written into its events' metadata.

    ``correlation_id`` is shared by every message of one business transaction;
    ``causation_id`` is the id of the message (command or event) that caused this command.
    """

    command_id: uuid.UUID
    command_type: str
    correlation_id: str
    causation_id: str
    actor: str | None = None

    def metadata(self) -> Metadata:
        """The metadata of the events this command writes.

        Their ``$causationId`` is this command's cause: the command itself for a root command,
        the event it reacts to, or the parent command. Commands are not stored, so this keeps
        the chain followable through stored events: an event's cause is either another stored
        event's id or the ``commandId`` of other stored events.
        """
        return Metadata(
            correlation_id=self.correlation_id,
            causation_id=self.causation_id,
            command_id=str(self.command_id),
            actor=self.actor,
        )


class CommandAlreadyHandled(CQRSError):  # noqa: N818 - a signal, not a failure
    """The command's events are already in the stream: it was delivered before.

    Raised by a repository while loading, inside a unit of work, and turned by the command bus
    into a result flagged ``duplicate``, with the original stream, version and position.
    """

    def __init__(self, command_id: uuid.UUID, result: AppendResult) -> None:
        self.command_id = command_id
        self.result = result
        super().__init__(
            f"Command {command_id} was already handled: its events end at revision "
            f"{result.revision} of stream {result.stream!r}."
        )


@dataclass(frozen=True, slots=True)
class _StagedSave:
    """A save held until the handler returns: ``append()`` writes it (and records the result)."""

    stream: str
    aggregate: object
    append: Callable[[], None]


@dataclass(slots=True)
class UnitOfWork:
    """One attempt at one command: its context, its staged save, and the appends made.

    A repository's ``save`` inside the unit of work only *stages* the append
    (:meth:`stage`); :meth:`commit`, called by the command bus when the handler returns,
    performs it. A second save (of another aggregate, or of the same one again) is refused
    at once, while nothing is written yet.
    """

    context: CommandContext
    appends: list[AppendResult] = field(default_factory=list)
    _staged: _StagedSave | None = field(default=None, init=False, repr=False, compare=False)
    _first_ids: dict[str, uuid.UUID] = field(default_factory=dict, init=False, repr=False, compare=False)
    _metadata: dict[int, bytes] = field(default_factory=dict, init=False, repr=False, compare=False)
    _unchecked: dict[str, Callable[[], bool]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def event_id(self, stream: str, index: int) -> uuid.UUID:
        """The id of the ``index``-th event this command writes to ``stream``.

        The first one is derived once per attempt: the repository looks for it while loading
        (redelivery check) and uses it when saving.
        """
        if index:
            return derive_event_id(self.context.command_id, stream, index)
        found = self._first_ids.get(stream)
        if found is None:
            found = self._first_ids[stream] = derive_event_id(self.context.command_id, stream, 0)
        return found

    def metadata_json(self, schema_version: int) -> bytes:
        """The stored metadata of this command's events of a type at ``schema_version``.

        The same bytes as ``context.metadata()`` with that schema version would give
        (:meth:`Metadata.to_json`: its keys in field order, ``None`` left out), encoded once
        and without validating values the context already holds as strings.
        """
        found = self._metadata.get(schema_version)
        if found is None:
            context = self.context
            document: dict[str, str | int] = {
                CORRELATION_ID_KEY: context.correlation_id,
                CAUSATION_ID_KEY: context.causation_id,
                COMMAND_ID_KEY: str(context.command_id),
            }
            if context.actor is not None:
                document[ACTOR_KEY] = context.actor
            document[SCHEMA_VERSION_KEY] = schema_version
            found = self._metadata[schema_version] = pydantic_core.to_json(document)
        return found

    def claim_event_ids(self, stream: str, count: int) -> list[uuid.UUID]:
        """Ids for the ``count`` events this command is about to append to ``stream``.

        A command appends once. A second append (to the same stream or another) is refused:
        two appends are not atomic, so a conflict on the second could be neither retried (the
        first is already stored) nor told apart from a redelivery. Save the aggregate once,
        after all its decisions; change another aggregate with a follow-up command.
        """
        if self.appends:
            raise InvalidInputError(
                "stream",
                stream,
                f"command {self.context.command_type} already appended to {self.appends[0].stream!r}; "
                "a command appends once, to one aggregate (react to its events with a follow-up command)",
            )
        return [self.event_id(stream, n) for n in range(count)]

    def stage(self, stream: str, aggregate: object, append: Callable[[], None]) -> None:
        """Hold ``append`` (the save of ``aggregate`` to ``stream``) until :meth:`commit`.

        Raises :class:`InvalidInputError`, writing nothing, if a save is already staged (of
        another aggregate, or of the same one: save it once, after all its decisions) or this
        command has already appended: a command appends once, to one aggregate.
        """
        staged = self._staged
        if self.appends or staged is not None:
            first = self.appends[0].stream if self.appends else staged.stream if staged else stream
            raise InvalidInputError(
                "stream",
                stream,
                f"command {self.context.command_type} already saved {first!r}; a command appends "
                "once, to one aggregate (save it once, after all its decisions; react to its "
                "events with a follow-up command); nothing was written",
            )
        self._staged = _StagedSave(stream, aggregate, append)

    def commit(self) -> None:
        """Perform the staged save, if any (the command bus calls it when the handler returns).

        Its errors propagate: :class:`~eventsourcing_cqrs.errors.WrongExpectedVersionError`
        (the bus retries the command), or :class:`CommandAlreadyHandled` when the store found
        the command's events already written.
        """
        staged, self._staged = self._staged, None
        if staged is not None:
            staged.append()

    def check_later(self, stream: str, is_current: Callable[[], bool]) -> None:
        """Note a load of ``stream`` that the store has not confirmed (an aggregate from a cache).

        ``is_current()`` tells, reading the store, whether the stream is still at the version
        loaded (and forgets the cached state if not). The save of that stream needs no such
        read: its expected version is the check. Every other unconfirmed load is checked before
        the command's outcome stands (:meth:`stale_loads`).
        """
        self._unchecked[stream] = is_current

    def stale_loads(self, *, saved_too: bool) -> list[str]:
        """The streams loaded unconfirmed that have moved since; each is checked once.

        The stream of the staged save is left out unless ``saved_too`` (the handler failed, so
        nothing will be appended to check it). A non-empty answer means the handler decided on
        a stale state: the command bus runs it again, on the store's state.
        """
        unchecked, self._unchecked = self._unchecked, {}
        staged = self._staged
        skip = staged.stream if staged is not None and not saved_too else None
        return [stream for stream, is_current in unchecked.items() if stream != skip and not is_current()]

    def record(self, result: AppendResult) -> None:
        """Remember an append made by this command."""
        self.appends.append(result)


_current: ContextVar[UnitOfWork | None] = ContextVar("eventsourcing_cqrs_unit_of_work", default=None)


def current_unit_of_work() -> UnitOfWork | None:
    """The unit of work of the command being handled in this context, if any."""
    return _current.get()


@contextlib.contextmanager
def unit_of_work(context: CommandContext) -> Iterator[UnitOfWork]:
    """Run the block as one attempt at the command described by ``context``.

    When the block ends without an exception, the staged save is appended (:meth:`UnitOfWork.commit`).
    """
    work, token = begin_unit_of_work(context)
    try:
        yield work
        work.commit()
    finally:
        end_unit_of_work(token)


def begin_unit_of_work(context: CommandContext) -> tuple[UnitOfWork, Token[UnitOfWork | None]]:
    """Start an attempt (what :func:`unit_of_work` does on entry, for the command bus's loop).

    Call :meth:`UnitOfWork.commit` when the handler returns, and pass the token to
    :func:`end_unit_of_work` when the attempt ends, however it ends.
    """
    work = UnitOfWork(context)
    return work, _current.set(work)


def end_unit_of_work(token: Token[UnitOfWork | None]) -> None:
    """End the attempt started with ``token``."""
    _current.reset(token)
