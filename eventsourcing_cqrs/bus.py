"""The command bus and the query bus.

:meth:`CommandBus.dispatch` runs one command through:

1. **context** — a :class:`~eventsourcing_cqrs.unit_of_work.CommandContext` with the command
   id, a correlation id (inherited from the event or command that caused this one) and a
   causation id, bound into structlog's context variables for every log line on the way;
2. **middleware** — your callables, outermost first (:class:`Authorize` is one);
3. **the handler**, inside a unit of work: events saved by a
   :class:`~eventsourcing_cqrs.repository.Repository` get ids derived from the command id and
   metadata naming the correlation id, causation id, command id and actor;
4. **retries** — on :class:`~eventsourcing_cqrs.errors.WrongExpectedVersionError` the handler
   runs again on fresh state, after a jittered, exponentially growing pause, up to
   ``RetryPolicy.max_attempts``; each conflict is logged (``command.retried``) and counted
   (:attr:`CommandBus.metrics`). A handler that decided on an aggregate from a repository's cache
   without the store confirming it (see :mod:`eventsourcing_cqrs.repository`) and then appended
   nothing to it (it refused, or saved another aggregate) runs again at once on the store's
   state if that aggregate had moved meanwhile (logged ``command.retried`` with
   ``reason="stale cache"``);
5. **timing** — the :class:`CommandResult` and the ``command.handled`` log line carry the
   duration.

A command delivered twice (same ``command_id``) writes nothing the second time; its result is
the first delivery's, flagged ``duplicate`` (logged ``command.duplicate``, counted in
:attr:`CommandMetrics.duplicates`), whether it updates an aggregate or creates one.

A handler saves one aggregate, once: its save is appended when the handler returns, and a
second save is refused (``InvalidInputError``) before anything is written.

:class:`QueryBus` maps each query type to one handler returning the query's DTO type.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import structlog
from structlog.contextvars import bind_contextvars, reset_contextvars

from eventsourcing_cqrs._logging import enabled
from eventsourcing_cqrs.errors import (
    AuthorizationError,
    ConcurrencyRetriesExhaustedError,
    DomainError,
    HandlerNotFoundError,
    InvalidInputError,
    WrongExpectedVersionError,
)
from eventsourcing_cqrs.event_store.port import CORRELATION_ID_KEY, AppendResult, RecordedEvent
from eventsourcing_cqrs.messages import Command, Query
from eventsourcing_cqrs.serialization import EventEnvelope
from eventsourcing_cqrs.unit_of_work import (
    CommandAlreadyHandled,
    CommandContext,
    UnitOfWork,
    begin_unit_of_work,
    current_unit_of_work,
    end_unit_of_work,
)

__all__ = [
    "Authorize",
    "CommandBus",
    "CommandMetrics",
    "CommandResult",
    "Middleware",
    "QueryBus",
    "RetryPolicy",
]

logger = structlog.get_logger(__name__)

C = TypeVar("C", bound=Command)
Q = TypeVar("Q", bound=Query[Any])
R = TypeVar("R")

#: An event that caused a command: a stored event, or one decoded with its metadata.
Cause = RecordedEvent | EventEnvelope[Any]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a conflicting command is re-run.

    Attempt ``n`` (from 1) that conflicts waits a random time between 0 and
    ``min(max_delay, base_delay * 2 ** (n - 1))`` seconds ("full jitter", so that writers that
    collided do not collide again in lockstep) before attempt ``n + 1``.
    """

    max_attempts: int = 10
    base_delay: float = 0.002
    max_delay: float = 0.2

    def __post_init__(self) -> None:
        if (
            isinstance(self.max_attempts, bool)
            or not isinstance(self.max_attempts, int)
            or self.max_attempts < 1
        ):
            raise InvalidInputError("max_attempts", self.max_attempts, "give at least 1 attempt")
        for name, delay in (("base_delay", self.base_delay), ("max_delay", self.max_delay)):
            if isinstance(delay, bool) or not isinstance(delay, int | float):
                raise InvalidInputError(
                    name, delay, f"a delay is a number of seconds, not {type(delay).__name__}"
                )
            if not math.isfinite(delay):
                raise InvalidInputError(name, delay, "a delay must be a finite number of seconds")
        if self.base_delay < 0 or self.max_delay < 0:
            raise InvalidInputError(
                "retry delay", (self.base_delay, self.max_delay), "delays are non-negative"
            )

    def delay(self, attempt: int) -> float:
        """The pause after failed attempt number ``attempt`` (from 1), in seconds."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return random.uniform(0, ceiling)


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What a dispatched command did.

    ``stream``, ``version`` and ``position`` describe its last append (``None`` when the
    command decided to write nothing); wait for ``position`` in a read model to read your write.
    """

    command_id: uuid.UUID
    correlation_id: str
    appends: tuple[AppendResult, ...]
    attempts: int
    duplicate: bool
    duration: float

    @property
    def stream(self) -> str | None:
        """The stream written to."""
        return self.appends[-1].stream if self.appends else None

    @property
    def version(self) -> int | None:
        """The stream's revision after the command (the aggregate's new version)."""
        return self.appends[-1].revision if self.appends else None

    @property
    def position(self) -> int | None:
        """The commit position of the command's last event in ``$all``."""
        return self.appends[-1].position if self.appends else None


class Middleware(Protocol):
    """Wraps command handling: call ``call_next()`` to continue, or raise to refuse.

    Middleware runs once per dispatch, outside the retry loop.
    """

    def __call__(
        self, command: Command, context: CommandContext, call_next: Callable[[], CommandResult]
    ) -> CommandResult: ...


class Authorize:
    """Middleware that asks ``policy(command, actor)`` and raises :class:`AuthorizationError` on ``False``.

    The actor is the one given to :meth:`CommandBus.dispatch`; it is also written into the
    metadata of the events the command produces.
    """

    def __init__(self, policy: Callable[[Command, str | None], bool]) -> None:
        self._policy = policy

    def __call__(
        self, command: Command, context: CommandContext, call_next: Callable[[], CommandResult]
    ) -> CommandResult:
        if not self._policy(command, context.actor):
            logger.warning("command.unauthorized", actor=context.actor)
            raise AuthorizationError(context.actor, context.command_type)
        return call_next()


@dataclass
class CommandMetrics:
    """Counters of a :class:`CommandBus` since it was created (thread-safe)."""

    dispatched: int = 0
    succeeded: int = 0
    duplicates: int = 0
    rejected: int = 0
    failed: int = 0
    conflicts: int = 0
    retries: int = 0
    exhausted: int = 0
    handling_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def _add(self, **amounts: float) -> None:
        with self._lock:
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)

    def as_dict(self) -> dict[str, float]:
        """A consistent copy of the counters."""
        with self._lock:
            return {
                name: getattr(self, name)
                for name in (
                    "dispatched",
                    "succeeded",
                    "duplicates",
                    "rejected",
                    "failed",
                    "conflicts",
                    "retries",
                    "exhausted",
                    "handling_seconds",
                )
            }


_cause: ContextVar[Cause | None] = ContextVar("eventsourcing_cqrs_cause", default=None)


def correlation_of(cause: Cause) -> str:
    """The correlation id ``cause`` passes on: its ``$correlationId``, else its own id."""
    if isinstance(cause, EventEnvelope):
        return cause.metadata.correlation_id or str(cause.id)
    with contextlib.suppress(ValueError, AttributeError):
        correlation = json.loads(cause.metadata).get(CORRELATION_ID_KEY) if cause.metadata else None
        if isinstance(correlation, str) and correlation:
            return correlation
    return str(cause.id)


class CommandBus:
    """Routes each command type to one handler, with context, middleware, retries and timing.

    A handler is any callable taking the command; it loads aggregates from repositories,
    calls their methods and saves them. What it returns is ignored.
    """

    def __init__(
        self,
        *,
        middleware: Sequence[Middleware] = (),
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if isinstance(middleware, str) or not isinstance(middleware, Iterable):
            raise InvalidInputError("middleware", middleware, "give a sequence of middleware callables")
        chain = tuple(middleware)
        for one in chain:
            if not callable(one):
                raise InvalidInputError("middleware", one, "each middleware must be callable")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise InvalidInputError("retry", retry, "give a RetryPolicy (or None for the default)")
        if not callable(sleep):
            raise InvalidInputError("sleep", sleep, "give a callable taking seconds, such as time.sleep")
        self._handlers: dict[type[Command], Callable[[Any], object]] = {}
        self._middleware = chain
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self.metrics = CommandMetrics()

    def register(self, command_type: type[C], handler: Callable[[C], object]) -> None:
        """Route ``command_type`` (exactly that class) to ``handler``."""
        if not (isinstance(command_type, type) and issubclass(command_type, Command)):
            raise InvalidInputError("command type", command_type, "register Command subclasses")
        if not callable(handler):
            raise InvalidInputError(
                "handler", handler, f"the handler of {command_type.__name__} must be callable"
            )
        if command_type in self._handlers:
            raise InvalidInputError(
                "command type", command_type.__name__, "a handler is already registered for it"
            )
        self._handlers[command_type] = handler

    def handles(self, command_type: type[Command]) -> bool:
        """Whether a handler is registered for ``command_type``."""
        return isinstance(command_type, type) and command_type in self._handlers

    @contextlib.contextmanager
    def reacting_to(self, event: Cause) -> Iterator[None]:
        """Within the block, dispatched commands are caused by ``event`` (for event handlers).

        Their correlation id is the event's, their causation id the event's id.
        """
        if not isinstance(event, RecordedEvent | EventEnvelope):
            raise InvalidInputError("event", event, "react to a RecordedEvent or an EventEnvelope")
        token = _cause.set(event)
        try:
            yield
        finally:
            _cause.reset(token)

    def dispatch(
        self,
        command: Command,
        *,
        actor: str | None = None,
        caused_by: Cause | None = None,
        correlation_id: str | None = None,
    ) -> CommandResult:
        """Handle ``command`` and report the stream, new version and commit position it wrote.

        ``caused_by`` is the event that led to this command (defaults to the one given to
        :meth:`reacting_to`); inside another command's handler the parent command is the
        cause and its actor the default actor. ``correlation_id`` starts a new correlation
        for a root command (default: the command id).

        Raises :class:`HandlerNotFoundError`, :class:`AuthorizationError`, the handler's own
        errors (e.g. :class:`DomainError`), or :class:`ConcurrencyRetriesExhaustedError`.
        """
        if not isinstance(command, Command):
            raise InvalidInputError("command", command, "dispatch a Command instance")
        if actor is not None and not isinstance(actor, str):
            raise InvalidInputError("actor", actor, "an actor is a string (a user or service name) or None")
        if correlation_id is not None and (not isinstance(correlation_id, str) or not correlation_id):
            raise InvalidInputError("correlation id", correlation_id, "give a non-empty string")
        if caused_by is not None and not isinstance(caused_by, RecordedEvent | EventEnvelope):
            raise InvalidInputError(
                "caused_by", caused_by, "give the RecordedEvent or EventEnvelope that caused the command"
            )
        handler = self._handlers.get(type(command))
        if handler is None:
            raise HandlerNotFoundError(type(command).__name__, "command")
        command_id = str(command.command_id)
        context = self._context(command, command_id, actor, caused_by, correlation_id)
        fields = {
            "command_type": context.command_type,
            "command_id": command_id,
            "correlation_id": context.correlation_id,
            "causation_id": context.causation_id,
        }
        # Bound into context variables for every log line of the application and the stores,
        # and onto our own logger (when it logs) so that our lines carry them whatever the
        # configuration.
        log = _CommandLog(fields, context.actor)
        tokens = bind_contextvars(**fields)
        try:
            self.metrics._add(dispatched=1)
            started = time.perf_counter()

            def run() -> CommandResult:
                return self._run(handler, command, context, started, log)

            call: Callable[[], CommandResult] = run
            for middleware in reversed(self._middleware):
                call = _bind(middleware, command, context, call)
            try:
                result = call()
            except DomainError as exc:
                self.metrics._add(rejected=1, handling_seconds=time.perf_counter() - started)
                log.info("command.rejected", error=type(exc).__name__, reason=str(exc))
                raise
            except Exception as exc:
                self.metrics._add(failed=1, handling_seconds=time.perf_counter() - started)
                log.warning("command.failed", error=type(exc).__name__, reason=str(exc))
                raise
            self.metrics._add(handling_seconds=result.duration)
            return result
        finally:
            reset_contextvars(**tokens)

    def _context(
        self,
        command: Command,
        command_id: str,
        actor: str | None,
        cause: Cause | None,
        correlation_id: str | None,
    ) -> CommandContext:
        # The nearest cause wins: the event named here, else the command being handled, else
        # the event given to reacting_to().
        parent = current_unit_of_work()
        if cause is None and parent is None:
            cause = _cause.get()
        if cause is not None:
            correlation, causation = correlation_of(cause), str(cause.id)
        elif parent is not None:
            correlation = parent.context.correlation_id
            causation = str(parent.context.command_id)
            actor = actor if actor is not None else parent.context.actor
        else:
            correlation = correlation_id or command_id
            causation = command_id
        return CommandContext(
            command_id=command.command_id,
            command_type=type(command).__name__,
            correlation_id=correlation,
            causation_id=causation,
            actor=actor,
        )

    def _run(
        self,
        handler: Callable[[Any], object],
        command: Command,
        context: CommandContext,
        started: float,
        log: _CommandLog,
    ) -> CommandResult:
        policy = self._retry
        attempt = 0
        while True:
            attempt += 1
            work, token = begin_unit_of_work(context)
            try:
                _decide(handler, command, work)
                work.commit()  # the handler's one save, appended now that it has decided
            except CommandAlreadyHandled as done:
                return self._finish(context, (done.result,), attempt, started, log, duplicate=True)
            except _StaleLoads as stale:
                # No pause: the stale entries are gone, so the next attempt reads the store.
                if attempt >= policy.max_attempts:
                    self.metrics._add(exhausted=1)
                    stream = stale.streams[0]
                    raise ConcurrencyRetriesExhaustedError(context.command_type, stream, attempt) from None
                self.metrics._add(retries=1)
                log.info("command.retried", reason="stale cache", streams=stale.streams, attempt=attempt)
                continue
            except WrongExpectedVersionError as exc:
                self.metrics._add(conflicts=1)
                if attempt >= policy.max_attempts:
                    self.metrics._add(exhausted=1)
                    log.warning("command.retries_exhausted", stream=exc.stream, attempts=attempt)
                    raise ConcurrencyRetriesExhaustedError(context.command_type, exc.stream, attempt) from exc
                delay = policy.delay(attempt)
                self.metrics._add(retries=1)
                log.info(
                    "command.retried",
                    stream=exc.stream,
                    expected=str(exc.expected),
                    actual=exc.actual,
                    attempt=attempt,
                    delay_ms=round(delay * 1000, 3),
                )
                self._sleep(delay)
                continue
            finally:
                end_unit_of_work(token)
            return self._finish(context, tuple(work.appends), attempt, started, log, duplicate=False)

    def _finish(
        self,
        context: CommandContext,
        appends: tuple[AppendResult, ...],
        attempts: int,
        started: float,
        log: _CommandLog,
        *,
        duplicate: bool,
    ) -> CommandResult:
        duration = time.perf_counter() - started
        result = CommandResult(
            command_id=context.command_id,
            correlation_id=context.correlation_id,
            appends=appends,
            attempts=attempts,
            duplicate=duplicate,
            duration=duration,
        )
        if duplicate:
            self.metrics._add(duplicates=1)
        else:
            self.metrics._add(succeeded=1)
        if enabled("info"):
            log.info(
                "command.duplicate" if duplicate else "command.handled",
                stream=result.stream,
                version=result.version,
                commit_position=result.position,
                attempts=attempts,
                duration_ms=round(duration * 1000, 3),
            )
        return result


class _StaleLoads(Exception):  # noqa: N818 - a signal inside the bus's retry loop
    """The handler decided on cached state that the store has moved past: run it again."""

    def __init__(self, streams: list[str]) -> None:
        super().__init__(", ".join(streams))
        self.streams = streams


def _decide(handler: Callable[[Any], object], command: Command, work: UnitOfWork) -> None:
    """Run the handler; raise :class:`_StaleLoads` if it decided on state that has moved.

    An aggregate loaded from a repository's cache is confirmed by the append of its save (the
    expected version). Any other one the handler read, and every one when the handler raised
    (a refusal may rest on the stale state), is confirmed here by reading the store before the
    outcome stands; a redelivery found by the load (``CommandAlreadyHandled``) needs no check.
    """
    try:
        handler(command)
    except CommandAlreadyHandled:
        raise
    except Exception as exc:
        stale = work.stale_loads(saved_too=True)
        if stale:
            raise _StaleLoads(stale) from exc
        raise
    stale = work.stale_loads(saved_too=False)
    if stale:
        raise _StaleLoads(stale)


class _CommandLog:
    """Our logger bound to one command's context, assembled at its first line (if any)."""

    __slots__ = ("_actor", "_bound", "_fields")

    def __init__(self, fields: dict[str, str], actor: str | None) -> None:
        self._fields = fields
        self._actor = actor
        self._bound: Any = None

    def _logger(self) -> Any:
        if self._bound is None:
            self._bound = logger.bind(**self._fields, actor=self._actor)
        return self._bound

    def info(self, event: str, **values: Any) -> None:
        if enabled("info"):
            self._logger().info(event, **values)

    def warning(self, event: str, **values: Any) -> None:
        if enabled("warning"):
            self._logger().warning(event, **values)


def _bind(
    middleware: Middleware, command: Command, context: CommandContext, call_next: Callable[[], CommandResult]
) -> Callable[[], CommandResult]:
    return lambda: middleware(command, context, call_next)


class QueryBus:
    """Routes each query type to one handler that returns the query's DTO."""

    def __init__(self) -> None:
        self._handlers: dict[type[Query[Any]], Callable[[Any], Any]] = {}

    def register(self, query_type: type[Q], handler: Callable[[Q], Any]) -> None:
        """Route ``query_type`` (exactly that class) to ``handler``."""
        if not (isinstance(query_type, type) and issubclass(query_type, Query)):
            raise InvalidInputError("query type", query_type, "register Query subclasses")
        if not callable(handler):
            raise InvalidInputError(
                "handler", handler, f"the handler of {query_type.__name__} must be callable"
            )
        if query_type in self._handlers:
            raise InvalidInputError(
                "query type", query_type.__name__, "a handler is already registered for it"
            )
        self._handlers[query_type] = handler

    def ask(self, query: Query[R]) -> R:
        """The answer of the handler registered for the query's type."""
        if not isinstance(query, Query):
            raise InvalidInputError("query", query, "ask a Query instance")
        handler = self._handlers.get(type(query))
        if handler is None:
            raise HandlerNotFoundError(type(query).__name__, "query")
        started = time.perf_counter()
        answer: R = handler(query)
        logger.debug(
            "query.answered",
            query_type=type(query).__name__,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        return answer
