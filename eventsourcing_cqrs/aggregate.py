"""The aggregate base class: state rebuilt from events, decisions that emit new ones.

An aggregate is a plain class, parametrised by the union of the events its stream holds. It
implements :meth:`Aggregate.when`, which changes state for one event, usually with a ``match``
statement that mypy checks for exhaustiveness; its command methods check invariants (raising a
:class:`~eventsourcing_cqrs.errors.DomainError` subclass) and call :meth:`Aggregate.apply`::

    class Account(Aggregate[AccountEvent]):
        category = "Account"

        def __init__(self, aggregate_id: str) -> None:
            super().__init__(aggregate_id)
            self.balance = Decimal(0)

        def deposit(self, amount: Decimal) -> None:
            self.apply(MoneyDeposited(account_id=self.id, amount=amount, balance=self.balance + amount))

        def when(self, event: AccountEvent) -> None:
            match event:
                case MoneyDeposited(balance=balance):
                    self.balance = balance
                ...
                case _:
                    assert_never(event)

There is no metaclass and no decorator: what mypy sees is what runs. ``__init__`` takes only
the id, because the repository creates the empty aggregate before replaying its stream.

**Snapshots** are opt-in: set ``snapshot_type`` to a pydantic model, implement
:meth:`Aggregate.snapshot` and :meth:`Aggregate.restore`, and bump ``snapshot_version``
whenever the snapshot's shape *or* the logic of ``when`` changes, so that older snapshots are
ignored rather than trusted.

**The repository's cache** (``Repository(cache_size=N)``) hands out deep copies
(``copy.deepcopy``) of the aggregates it keeps, so keep an aggregate's state to plain values
(no open files, locks or connections); one that cannot be copied is simply not cached.
"""

from __future__ import annotations

import types
import typing
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

from eventsourcing_cqrs.errors import InvalidInputError
from eventsourcing_cqrs.event_store.port import StreamName
from eventsourcing_cqrs.messages import DomainEvent

__all__ = ["Aggregate", "event_classes_of"]

E = TypeVar("E", bound=DomainEvent)


class Aggregate(Generic[E]):
    """Base of event-sourced aggregates whose stream holds events of type ``E``.

    ``version`` is the stream revision of the last stored event the aggregate reflects (``-1``
    for a new aggregate); it is the expected version when the pending events are saved.
    """

    #: The stream category: the aggregate with id ``42`` lives in stream ``{category}-42``.
    category: ClassVar[str]
    #: The pydantic model of this aggregate's snapshots; ``None`` when it takes none.
    snapshot_type: ClassVar[type[BaseModel] | None] = None
    #: Bump to invalidate every stored snapshot (new snapshot shape or new ``when`` logic).
    snapshot_version: ClassVar[int] = 1
    #: Event classes a framework base class adds to the stream beside ``E`` (a process's
    #: commands issued and deadlines); :func:`event_classes_of` counts them in.
    framework_events: ClassVar[tuple[type[DomainEvent], ...]] = ()

    def __init__(self, aggregate_id: str) -> None:
        if not isinstance(aggregate_id, str) or not aggregate_id:
            raise InvalidInputError("aggregate id", aggregate_id, "an aggregate id is a non-empty string")
        self._id = aggregate_id
        self._version = -1
        self._pending: list[E] = []
        self._historical = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self._id!r}, version={self._version})"

    @property
    def id(self) -> str:
        """The aggregate's id, unique within its category."""
        return self._id

    @property
    def version(self) -> int:
        """The revision of the last stored event applied (``-1`` if none has been stored)."""
        return self._version

    @property
    def stream(self) -> StreamName:
        """The aggregate's stream: ``{category}-{id}``."""
        return StreamName.for_aggregate(type(self).category, self._id)

    @property
    def pending_events(self) -> tuple[E, ...]:
        """Events applied since the last load or save, in order; the repository stores them."""
        return tuple(self._pending)

    @property
    def is_historical(self) -> bool:
        """Whether this is a past state (loaded ``at_version`` or ``at_time``); it cannot be saved."""
        return self._historical

    def apply(self, event: E) -> None:
        """Record a new event: change state with :meth:`when`, then queue it for saving."""
        self.when(event)
        self._pending.append(event)

    def when(self, event: E) -> None:
        """Change state for one event (new or replayed). Never check invariants here: it is history."""
        raise NotImplementedError(f"{type(self).__name__} must implement when(event)")

    def snapshot(self) -> BaseModel:
        """The state as an instance of ``snapshot_type`` (only called when snapshots are enabled)."""
        raise NotImplementedError(f"{type(self).__name__} must implement snapshot() to take snapshots")

    def restore(self, snapshot: Any) -> None:
        """Set state from an instance of ``snapshot_type`` (only called when snapshots are enabled)."""
        raise NotImplementedError(f"{type(self).__name__} must implement restore() to use snapshots")

    # -- for the repository ---------------------------------------------------------------

    def _replayed(self, event: E, revision: int) -> None:
        self.when(event)
        self._version = revision

    def _restored(self, snapshot: BaseModel, revision: int) -> None:
        self.restore(snapshot)
        self._version = revision

    def _saved(self, revision: int) -> None:
        self._pending.clear()
        self._version = revision

    def _mark_historical(self) -> None:
        self._historical = True


def event_classes_of(aggregate_type: type[Aggregate[Any]]) -> tuple[type[DomainEvent], ...]:
    """The event classes named by ``aggregate_type``'s base ``Aggregate[...]`` (a class or a union),
    and its ``framework_events``."""
    for klass in aggregate_type.__mro__:
        for base in getattr(klass, "__orig_bases__", ()):
            origin = typing.get_origin(base)
            # Aggregate[...] itself, or a generic base that forwards its one parameter (Process[...]).
            if isinstance(origin, type) and issubclass(origin, Aggregate):
                (argument,) = typing.get_args(base)
                if isinstance(argument, TypeVar):
                    continue
                if typing.get_origin(argument) in (typing.Union, types.UnionType):
                    members = typing.get_args(argument)
                else:
                    members = (argument,)
                if all(isinstance(m, type) and issubclass(m, DomainEvent) for m in members):
                    return tuple(members) + aggregate_type.framework_events
    raise InvalidInputError(
        "aggregate type",
        aggregate_type,
        f"{aggregate_type.__name__} must derive from Aggregate[SomeEvent | OtherEvent]",
    )
