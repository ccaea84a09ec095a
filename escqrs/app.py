"""The application spec: what tools need to know about an application to operate on it.

An :class:`AppSpec` names an application's event registry, its aggregates (each an
:class:`~eventsourcing_cqrs.audit.AggregateSpec`: stream category → aggregate class and
registry) and its projections. The ``escqrs`` command finds one through a
``module:attribute`` reference (``--app`` / ``ESCQRS_APP``)::

    from escqrs import AggregateSpec, AppSpec

    bank = AppSpec(
        name="bank",
        registry=events.registry,
        aggregates=(AggregateSpec(Account, events.registry, snapshot_every=100),),
        projections=(AccountList, Ledger),        # classes, or any zero-argument factories
        reactors=(TransferProcess, WelcomeBonus), # reactors and process managers
        command_bus=bank_bus,                     # store -> the CommandBus they dispatch through
    )

Projections and reactors are given as factories rather than instances so that each use (a
runner, a rebuild, a status query) gets a fresh one. The spec is plain data: building it
connects to nothing. A process manager's streams are audited like an aggregate's: list its
:class:`~eventsourcing_cqrs.reactions.Process` class among the ``aggregates``.

The :mod:`escqrs` package is the composition root: the only place where the write side
(:mod:`eventsourcing_cqrs`) and the read side (:mod:`projections`) meet. Neither of them imports
it, and the write side never imports the read side; ``lint-imports`` (``make check``) keeps it so.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from eventsourcing_cqrs.audit import AggregateSpec
from eventsourcing_cqrs.errors import InvalidInputError
from eventsourcing_cqrs.event_store.port import EventStore, StreamName
from eventsourcing_cqrs.serialization import EventRegistry

if TYPE_CHECKING:
    # The read side only for annotations, so that `escqrs --help` does not import it.
    from rich.console import Console

    from eventsourcing_cqrs.audit import AggregateState, AuditEntry, StateDiff, TraceStep
    from eventsourcing_cqrs.bus import CommandBus
    from eventsourcing_cqrs.reactions import ProcessManager, Reactor
    from projections import Projection, ProjectionStatus, ReadModelStore

__all__ = ["AppSpec", "DemoContext", "load_app"]


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
    """An application as tools see it: events, aggregates, projections, reactors and, optionally, a demo.

    ``command_bus(store)`` builds the :class:`~eventsourcing_cqrs.bus.CommandBus` (handlers
    registered) that the ``reactors`` dispatch through; required when there are reactors.
    ``demo`` is called by ``escqrs demo`` with a :class:`DemoContext`.
    """

    name: str
    registry: EventRegistry
    aggregates: Sequence[AggregateSpec[Any]] = ()
    projections: Sequence[Callable[[], Projection]] = ()
    demo: Callable[[DemoContext], None] | None = None
    description: str = ""
    reactors: Sequence[Callable[[], Reactor | ProcessManager[Any]]] = ()
    command_bus: Callable[[EventStore], CommandBus] | None = None
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
        if self.reactors and self.command_bus is None:
            raise InvalidInputError(
                "command_bus", None, "an application with reactors needs command_bus(store) -> CommandBus"
            )

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

    def build_reactors(self) -> list[Reactor | ProcessManager[Any]]:
        """A fresh instance of every reactor and process manager, in the order they were declared."""
        return [factory() for factory in self.reactors]

    def reactor(self, name: str) -> Reactor | ProcessManager[Any]:
        """A fresh instance of the reactor or process manager called ``name``."""
        built = self.build_reactors()
        for reactor in built:
            if reactor.name == name:
                return reactor
        known = ", ".join(reactor.name for reactor in built) or "none"
        raise InvalidInputError("reactor", name, f"application {self.name!r} has reactors: {known}")

    def bus(self, store: EventStore) -> CommandBus:
        """The command bus of the application over ``store`` (what its reactors dispatch through)."""
        if self.command_bus is None:
            raise InvalidInputError("command_bus", None, f"application {self.name!r} gives no command_bus")
        return self.command_bus(store)


def load_app(reference: str) -> AppSpec:
    """The :class:`AppSpec` named by ``reference``, a ``package.module:attribute`` string.

    The attribute may also be a zero-argument function (or other factory) returning the spec,
    but not a class: a class is never called.
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
    if isinstance(target, type):
        # A class is callable, but calling one builds an instance of it (or fails for want of
        # arguments): only a function or another factory may stand for the spec.
        raise InvalidInputError(
            "application",
            reference,
            f"{reference} is a class ({target.__name__}), not an AppSpec: "
            "point --app at an AppSpec or a function returning one",
        )
    if not isinstance(target, AppSpec) and callable(target):
        target = target()
    if not isinstance(target, AppSpec):
        raise InvalidInputError(
            "application", reference, f"it is a {type(target).__name__}, not an eventsourcing_cqrs AppSpec"
        )
    return target
