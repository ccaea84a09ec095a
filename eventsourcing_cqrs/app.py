"""The application spec: what tools need to know about an application to operate on it.

An :class:`AppSpec` names an application's event registry, its aggregates (stream category →
aggregate class and registry) and its projections. The ``escqrs`` command finds one through a
``module:attribute`` reference (``--app`` / ``ESCQRS_APP``), and the audit API
(:class:`~eventsourcing_cqrs.audit.AuditTrail`) uses its aggregates to rebuild past states::

    from eventsourcing_cqrs.app import AggregateSpec, AppSpec

    bank = AppSpec(
        name="bank",
        registry=events.registry,
        aggregates=(AggregateSpec(Account, events.registry, snapshot_every=100),),
        projections=(AccountList, Ledger),        # classes, or any zero-argument factories
    )

Projections are given as factories rather than instances so that each use (a runner, a
rebuild, a status query) gets a fresh one. The spec is plain data: building it connects to
nothing.

This module and :mod:`eventsourcing_cqrs.cli` are the composition root of the framework: they
are the only places in ``eventsourcing_cqrs`` that refer to the ``projections`` package, and
only for type annotations here (the read side depends on the write side, never the reverse).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from eventsourcing_cqrs.aggregate import Aggregate, event_classes_of
from eventsourcing_cqrs.errors import InvalidInputError
from eventsourcing_cqrs.repository import Repository
from eventsourcing_cqrs.serialization import EventRegistry
from eventsourcing_cqrs.store.port import EventStore, StreamName

if TYPE_CHECKING:
    from rich.console import Console

    from eventsourcing_cqrs.audit import AggregateState, AuditEntry, StateDiff, TraceStep
    from projections.projection import Projection
    from projections.status import ProjectionStatus
    from projections.stores.port import ReadModelStore

__all__ = ["AggregateSpec", "AppSpec", "DemoContext", "load_app"]

A = TypeVar("A", bound=Aggregate[Any])


@dataclass(frozen=True, slots=True)
class AggregateSpec(Generic[A]):
    """One aggregate type of an application: its class, the registry decoding its events, and
    how its state is shown by audit tools.

    ``state`` turns an aggregate into the fields an auditor sees; by default they are the
    aggregate's public instance attributes (those not starting with ``_``), or its snapshot
    when it keeps its state in slots.
    """

    aggregate: type[A]
    registry: EventRegistry | None = None
    snapshot_every: int | None = None
    state: Callable[[A], Mapping[str, Any]] | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.aggregate, type) and issubclass(self.aggregate, Aggregate)):
            raise InvalidInputError("aggregate", self.aggregate, "give an Aggregate subclass")
        category = getattr(self.aggregate, "category", None)
        StreamName.for_aggregate(category or "", "x")  # a clear error for a missing or bad category
        event_classes_of(self.aggregate)  # and for an aggregate without Aggregate[Events]

    @property
    def category(self) -> str:
        """The stream category of this aggregate (``Account`` for ``Account-42``)."""
        category: str = self.aggregate.category
        return category

    def repository(self, store: EventStore) -> Repository[A]:
        """A repository of these aggregates in ``store``."""
        return Repository(store, self.aggregate, self.registry, snapshot_every=self.snapshot_every)

    def state_of(self, aggregate: A) -> dict[str, Any]:
        """The fields an auditor sees of ``aggregate`` (Python values, not yet JSON)."""
        if self.state is not None:
            return dict(self.state(aggregate))
        attributes = getattr(aggregate, "__dict__", None)
        if attributes is not None:
            return {name: value for name, value in attributes.items() if not name.startswith("_")}
        if self.aggregate.snapshot_type is not None:
            return dict(aggregate.snapshot())
        raise InvalidInputError(
            "aggregate",
            self.aggregate.__name__,
            "its state is not in public attributes; give AggregateSpec(state=...) to show it",
        )


class DemoContext(Protocol):
    """What an application's demo is given by ``escqrs demo``: fresh stores, and ways to show things.

    The demo narrates on :attr:`console` and shows audit results with the same tables as the
    ``escqrs audit`` commands.
    """

    @property
    def app(self) -> AppSpec:
        """The application being demonstrated."""
        ...

    @property
    def events(self) -> EventStore:
        """The event store (a fresh SQLite file unless ``--store`` named one)."""
        ...

    @property
    def read_models(self) -> ReadModelStore:
        """The read model store (a fresh SQLite file unless ``--read-models`` named one)."""
        ...

    @property
    def console(self) -> Console:
        """Where the demo writes (stdout)."""
        ...

    def heading(self, title: str) -> None:
        """Start a section of the demo."""
        ...

    def history(self, title: str, entries: Iterable[AuditEntry]) -> None:
        """Show events as ``escqrs audit history`` does."""
        ...

    def state(self, state: AggregateState) -> None:
        """Show a past state as ``escqrs audit state`` does."""
        ...

    def diff(self, diff: StateDiff) -> None:
        """Show a diff as ``escqrs audit diff`` does."""
        ...

    def trace(self, title: str, steps: Iterable[TraceStep]) -> None:
        """Show a correlation trace as ``escqrs audit trace`` does."""
        ...

    def projection_status(self, statuses: Sequence[ProjectionStatus]) -> None:
        """Show projection statuses as ``escqrs projections status`` does."""
        ...


@dataclass(frozen=True)
class AppSpec:
    """An application as tools see it: events, aggregates, projections and, optionally, a demo.

    ``demo`` is called by ``escqrs demo`` with a :class:`DemoContext`.
    """

    name: str
    registry: EventRegistry
    aggregates: Sequence[AggregateSpec[Any]] = ()
    projections: Sequence[Callable[[], Projection]] = ()
    demo: Callable[[DemoContext], None] | None = None
    description: str = ""
    _by_category: dict[str, AggregateSpec[Any]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.registry, EventRegistry):
            raise InvalidInputError("registry", self.registry, "give an EventRegistry")
        by_category: dict[str, AggregateSpec[Any]] = {}
        for spec in self.aggregates:
            if not isinstance(spec, AggregateSpec):
                raise InvalidInputError("aggregates", spec, "give AggregateSpec values")
            if spec.category in by_category:
                raise InvalidInputError("aggregates", spec.category, "two aggregates share this category")
            by_category[spec.category] = spec
        object.__setattr__(self, "_by_category", by_category)

    @property
    def categories(self) -> tuple[str, ...]:
        """The stream categories of the application's aggregates, sorted."""
        return tuple(sorted(self._by_category))

    def aggregate_for(self, stream: str) -> tuple[AggregateSpec[Any], str]:
        """The aggregate spec owning ``stream`` and the aggregate id within it.

        Raises :class:`~eventsourcing_cqrs.errors.InvalidInputError` when the stream's category
        is not one of the application's aggregates.
        """
        name = StreamName(stream)
        category, separator, aggregate_id = name.partition("-")
        spec = self._by_category.get(category)
        if spec is None or not separator or not aggregate_id:
            known = ", ".join(self.categories) or "none"
            raise InvalidInputError(
                "stream",
                stream,
                f"it is not the stream of an aggregate of application {self.name!r} "
                f"(a stream is '{{Category}}-{{id}}'; known categories: {known})",
            )
        return spec, aggregate_id

    def build_projections(self) -> list[Projection]:
        """A fresh instance of every projection, in the order they were declared."""
        return [factory() for factory in self.projections]

    def projection(self, name: str) -> Projection:
        """A fresh instance of the projection called ``name``."""
        built = self.build_projections()
        for projection in built:
            if projection.name == name:
                return projection
        known = ", ".join(projection.name for projection in built) or "none"
        raise InvalidInputError("projection", name, f"application {self.name!r} has projections: {known}")


def load_app(reference: str) -> AppSpec:
    """The :class:`AppSpec` named by ``reference``, a ``package.module:attribute`` string.

    The attribute may also be a zero-argument callable returning the spec.
    """
    module_name, separator, attribute = reference.partition(":")
    if not separator or not module_name or not attribute:
        raise InvalidInputError("application", reference, "give it as package.module:attribute")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidInputError(
            "application", reference, f"module {module_name!r} cannot be imported: {exc}"
        ) from exc
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise InvalidInputError(
                "application", reference, f"module {module_name!r} has no attribute {attribute!r}"
            ) from None
    if not isinstance(target, AppSpec) and callable(target):
        target = target()
    if not isinstance(target, AppSpec):
        raise InvalidInputError(
            "application", reference, f"it is a {type(target).__name__}, not an eventsourcing_cqrs AppSpec"
        )
    return target
