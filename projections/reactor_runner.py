"""The :class:`ReactorRunner`: reactors and process managers under the projection runner's guarantees.

A :class:`~eventsourcing_cqrs.reactions.Reactor` or
:class:`~eventsourcing_cqrs.reactions.ProcessManager` follows ``$all`` like a projection, with
a server-side filter on the types it handles, and everything :class:`ProjectionRunner` gives:
batches, a lease per name so one runner is active across processes, retries with backoff,
stop or park, parked-event retries, graceful stop and status with lag. What differs:

* **Effects before the checkpoint.** Each event's reaction (the commands it dispatches, the
  decisions a process records) is carried out before the batch's checkpoint commits, outside
  the read model's transaction (so no read-model lock is held while commands run), and only
  while this runner holds the lease (checked against the store before each batch). A crash in
  between redelivers the events; the reaction engine
  (:mod:`eventsourcing_cqrs.reactions.engine`) makes the redelivery change nothing more.
* **Where a new one starts.** A reactor that has never run starts **from now** (the head of
  ``$all`` when it first runs), so that old history never fires new effects;
  ``start_from=StartFrom.BEGINNING`` reacts to the whole history instead (its effects still
  apply once each). Once it has a checkpoint, it resumes from it.
* **No rebuilds.** A reactor has no read model to rebuild: its "version" never changes and
  :meth:`ReactorRunner.rebuild` is refused. To react to history again, drop its checkpoint
  (``escqrs projections drop``) and start it from the beginning.
* **Deadlines.** A process manager's pending deadlines are indexed in its read model (table
  ``deadlines``, written in the same transaction as its checkpoint, from the
  ``ProcessDeadline*`` events of its streams). Whenever the subscription is idle, at most every
  ``deadline_check_interval`` seconds, the runner holding the lease fires the deadlines its
  clock has passed: each is recorded once (``ProcessDeadlineFired``) in the instance's stream
  and reaches the deadline's handler through ``$all`` like any event. Deadlines therefore fire
  once the runner has caught up, in whichever process holds the lease. A process manager that
  starts from now (its first run, or after its checkpoint was dropped) first indexes the
  deadlines still pending in its streams, so that instances in flight keep their deadlines.
* **Outages of the event store** during a reaction are retried like read model outages
  (``store_backoff``), from the last checkpoint.
* **Segments.** With ``segments = N`` on the reactor or process manager, it runs as N
  segments shared out between worker processes like a segmented projection's. A reactor's
  events are sequenced by their stream, a process manager's by the instance they route to,
  so one instance is only ever decided on by one segment at a time, in order. Each segment
  fires the deadlines, indexes the pending deadlines and settles the unsettled commands of its
  own instances only.
"""

from __future__ import annotations

import enum
import time
from typing import Any

from eventsourcing_cqrs.bus import CommandBus
from eventsourcing_cqrs.errors import (
    EventStoreLockedError,
    EventStoreTimeoutError,
    EventStoreUnavailableError,
)
from eventsourcing_cqrs.event_store import read_after
from eventsourcing_cqrs.event_store.port import EventFilter, EventStore, RecordedEvent, validate_seconds
from eventsourcing_cqrs.reactions import Clock, ProcessManager, Reactor, engine_for, system_clock
from eventsourcing_cqrs.reactions.engine import FireOutcome, ReactionEngine
from projections._progress import ProgressCallback, RebuildReport
from projections.errors import LeaseLostError, ProjectionError
from projections.projection import Backoff, EventContext, FailurePolicy, Projection, segment_of
from projections.read_model_store.port import (
    Generation,
    Lease,
    LeaseRole,
    ReadModelStore,
    ReadModelWriter,
    TableSpec,
)
from projections.runner import _INFRASTRUCTURE_ERRORS, _SHARED_LEASE_POLL, ProjectionRunner, RunOutcome

__all__ = ["DEADLINES_TABLE", "ReactorRunner", "StartFrom", "reactions_projection"]

#: The table of a process manager's read model that indexes its pending deadlines.
DEADLINES_TABLE = "deadlines"

#: How many due deadlines one check fires at most (the rest wait for the next check).
_FIRE_LIMIT = 100

#: The most passes of ``run(until_caught_up=True)`` (each catches up with what the last caused).
_MAX_PASSES = 100


class StartFrom(enum.Enum):
    """Where a reactor that has never run starts."""

    #: The head of ``$all`` when it first runs: history fires nothing (the default).
    NOW = "now"
    #: The start of ``$all``: it reacts to every stored event (each effect still applies once).
    BEGINNING = "beginning"


class ReactionsProjection(Projection):
    """The read-model side of a reactor: its checkpoint and, for a process manager, its deadlines."""

    def __init__(self, engine: ReactionEngine) -> None:
        super().__init__()
        self.engine = engine
        for event_type in engine.event_types:
            self.on_recorded(event_type, self._index)

    def _index(self, recorded: RecordedEvent, context: EventContext) -> None:
        change = self.engine.deadline_change(recorded)
        if change is None:
            return
        table = context.table(DEADLINES_TABLE)
        if change.due is None:
            table.delete(change.deadline_id)
        else:
            table.put(
                change.deadline_id,
                {
                    "deadline_id": change.deadline_id,
                    "stream": change.stream,
                    "segment": segment_of(change.stream, self.engine.segments),
                    "deadline": change.deadline,
                    "due": change.due,
                },
            )

    def sequencing_key(self, recorded: RecordedEvent) -> str:
        return self.engine.sequencing_key(recorded)

    def describe(self) -> dict[str, Any]:
        described = super().describe()
        described["kind"] = self.engine.kind
        return described


def reactions_projection(engine: ReactionEngine) -> ReactionsProjection:
    """The projection that keeps ``engine``'s checkpoint (and deadlines) in a read model store."""
    tables = (TableSpec(DEADLINES_TABLE, indexes=("due",)),) if engine.has_deadlines else ()
    projection_class = type(
        f"Reactions_{engine.name}",
        (ReactionsProjection,),
        {
            "name": engine.name,
            "version": 1,
            "tables": tables,
            "failure_policy": FailurePolicy(engine.failure_policy),
            "segments": engine.segments,
        },
    )
    projection: ReactionsProjection = projection_class(engine)
    return projection


class ReactorRunner(ProjectionRunner):
    """Runs one reactor or process manager against an event store, a command bus and a read model store.

    ``bus`` dispatches the commands (register the handlers of every command it sends);
    ``events`` is the store it follows and, for a process manager, where its instances' streams
    are written. ``clock`` gives the time (deadlines, ``process.now``); ``start_from`` says where
    a reactor that has never run starts (:class:`StartFrom`). Every other keyword argument is
    :class:`ProjectionRunner`'s; ``batch_size`` defaults to 100 here, because a batch's
    effects are carried out one event at a time before it commits.
    """

    def __init__(
        self,
        reactor: Reactor | ProcessManager[Any],
        events: EventStore,
        store: ReadModelStore,
        *,
        bus: CommandBus,
        clock: Clock = system_clock,
        start_from: StartFrom | str = StartFrom.NOW,
        deadline_check_interval: float = 1.0,
        batch_size: int = 100,
        batch_delay: float = 0.05,
        backoff: Backoff | None = None,
        failure_policy: FailurePolicy | None = None,
        lease_poll_interval: float = 0.5,
        retry_check_interval: float = 1.0,
        checkpoint_interval: int = 500,
        store_backoff: Backoff | None = None,
        rebalance_interval: float = 1.0,
    ) -> None:
        if not isinstance(bus, CommandBus):
            raise TypeError(f"bus must be a CommandBus, not {type(bus).__name__}")
        if not callable(clock):
            raise TypeError("clock must be a callable returning a timezone-aware datetime")
        validate_seconds(deadline_check_interval, "deadline_check_interval", zero_allowed=True)
        engine = engine_for(reactor, store=events, bus=bus, clock=clock)
        # What a segment runner needs to build its own engine (an engine keeps per-instance state).
        self._reactor, self._bus, self._clock, self._event_store = reactor, bus, clock, events
        super().__init__(
            reactions_projection(engine),
            events,
            store,
            batch_size=batch_size,
            batch_delay=batch_delay,
            backoff=backoff,
            failure_policy=failure_policy,
            lease_poll_interval=lease_poll_interval,
            retry_check_interval=retry_check_interval,
            checkpoint_interval=checkpoint_interval,
            store_backoff=store_backoff,
            rebalance_interval=rebalance_interval,
        )
        self._engine = engine
        self._start_from = StartFrom(start_from)
        self._deadline_check_interval = deadline_check_interval
        self._next_deadline_check = 0.0
        self._reacts = True
        self._kind = "Reactor" if engine.kind == "reactor" else "Process manager"
        self._infrastructure = (
            *_INFRASTRUCTURE_ERRORS,
            LeaseLostError,
            EventStoreUnavailableError,
            EventStoreTimeoutError,
            EventStoreLockedError,
        )
        self._log = self._log.bind(kind=engine.kind)

    def __repr__(self) -> str:
        return f"<ReactorRunner {self._name!r}>"

    def _for_segment(self, segment: int, lease: Lease | None) -> ProjectionRunner:
        runner = super()._for_segment(segment, lease)
        assert isinstance(runner, ReactorRunner)
        runner._engine = engine_for(self._reactor, store=self._event_store, bus=self._bus, clock=self._clock)
        runner._next_deadline_check = 0.0
        return runner

    # -- a new number of segments: carried over, never rebuilt ----------------------------------

    def _outdated(self, generation: Generation) -> bool:
        return generation.segments != self._segments

    def _build(self, progress: ProgressCallback | None) -> RebuildReport | None:
        del progress
        started = time.monotonic()
        if not self._reshard():
            return None
        live = self._store.describe(self._name).live
        assert live is not None
        return RebuildReport(
            projection=self._name,
            version=live.version,
            generation=live.number,
            events=0,
            seconds=time.monotonic() - started,
            resumed=False,
            switched=True,
            position=live.checkpoint,
        )

    def _build_segment(self, target: int | None = None) -> bool:
        del target  # a reactor is never rebuilt: only its number of segments changes
        return self._reshard()

    def _reshard(self) -> bool:
        """Move to a generation with the new number of segments, carrying the old one's state over.

        A reactor is never rebuilt (that would fire its history's effects again): every new
        segment starts at the old generation's checkpoint (the lowest of its segments'), so
        the events between that and a faster old segment's checkpoint are reacted to again,
        which the engine's effectively-once ids make harmless. The pending deadlines and the
        parked events move to the segment their instance or key now belongs to. Done once,
        under the whole projection's rebuild lease; whether the new generation is live.
        """
        lease = self._store.lease(self._name, LeaseRole.REBUILD)
        if not self._acquire(lease, poll=_SHARED_LEASE_POLL):
            return False
        try:
            live = self._store.describe(self._name).live
            if live is None or not self._outdated(live):
                return True
            deadlines: list[dict[str, Any]] = []
            if self._engine.has_deadlines:
                with self._store.read(self._name) as view:
                    deadlines = view.table(DEADLINES_TABLE).find()
            parked = self._store.parked_events(self._name)
            building = self._store.create_generation(
                self._name, 1, self._projection.tables, lease=lease, segments=self._segments
            )
            for segment in [None] if self._segments == 1 else list(range(self._segments)):
                number = 0 if segment is None else segment
                writer = (
                    lease
                    if segment is None
                    else self._store.lease(self._name, LeaseRole.REBUILD, segment=segment)
                )
                if not self._acquire(writer, poll=_SHARED_LEASE_POLL):
                    return False
                try:
                    with self._store.transaction(self._name, building.number, lease=writer) as transaction:
                        if live.checkpoint is not None:
                            transaction.set_checkpoint(live.checkpoint, 0)
                        table = transaction.table(DEADLINES_TABLE) if deadlines else None
                        for row in deadlines:
                            stream = str(row["stream"])
                            if table is not None and segment_of(stream, self._segments) == number:
                                table.put(str(row["deadline_id"]), {**row, "segment": number})
                        for event in parked:
                            if segment_of(event.key, self._segments) == number:
                                transaction.park(
                                    event.to_recorded(),
                                    event.error,
                                    event.attempts,
                                    key=event.key,
                                    held_back=event.held_back,
                                )
                        transaction.mark_caught_up()
                finally:
                    if writer is not lease:
                        writer.release()
            self._store.switch_generation(self._name, building.number, lease=lease)
            self._log.info(
                "reactor.segments_changed",
                segments=self._segments,
                previous=live.segments,
                position=live.checkpoint,
                deadlines=len(deadlines),
                parked=len(parked),
            )
            return True
        finally:
            lease.release()

    def _mine(self, stream: str) -> bool:
        """Whether the instance in ``stream`` belongs to this runner's segment (always, unsegmented)."""
        return self._segment is None or segment_of(stream, self._segments) == self._segment

    @property
    def engine(self) -> ReactionEngine:
        """The engine that carries out each reaction."""
        return self._engine

    def run(self, *, until_caught_up: bool = False, install_signal_handlers: bool = False) -> RunOutcome:
        """Follow ``$all`` until :meth:`stop`, or with ``until_caught_up`` until nothing is left.

        A reaction appends events the reactor may read itself (a process's next step, a fired
        deadline), after the head it caught up with: ``until_caught_up`` therefore goes round
        until a pass leaves the head of what it reads where it found it (at most 100 passes),
        firing the deadlines due at the end of each.
        """
        if not until_caught_up:
            return super().run(install_signal_handlers=install_signal_handlers)
        outcome = RunOutcome.CAUGHT_UP
        for _ in range(_MAX_PASSES):
            head = self._events.head_position(self._filter)
            self._next_deadline_check = 0.0  # each pass ends by firing what is due
            outcome = super().run(until_caught_up=True, install_signal_handlers=install_signal_handlers)
            if outcome is not RunOutcome.CAUGHT_UP or self._events.head_position(self._filter) == head:
                return outcome
        return outcome

    def rebuild(self, progress: ProgressCallback | None = None) -> RebuildReport | None:
        """Refused: a reactor has no read model to rebuild (see the module docstring)."""
        raise ProjectionError(
            f"{self._kind} {self._name!r} is not rebuilt: rebuilding would fire its history's effects "
            "again. Drop its checkpoint and start it from the beginning if that is what you want."
        )

    # -- the hooks of ProjectionRunner ----------------------------------------------------------

    def _react_all(self, generation: Generation, lease: Lease, events: list[RecordedEvent]) -> None:
        # Through the store, that no other runner took the lease over, before the batch's effects
        # (an empty transaction checks the lease's epoch, as every commit does).
        with self._store.transaction(self._name, generation.number, lease=lease):
            pass
        super()._react_all(generation, lease, events)

    def _acquire(self, lease: Lease, *, timeout: float | None = None, poll: float | None = None) -> bool:
        acquired = super()._acquire(lease, timeout=timeout, poll=poll)
        if acquired:
            # Another runner may have written while this one did not hold the lease.
            self._engine.forget()
        return acquired

    def _react(self, lease: Lease, event: RecordedEvent, *, out_of_order: bool = False) -> None:
        if not lease.held:
            raise LeaseLostError(self._name, lease.role.value, lease.epoch, -1)
        self._engine.react(event, out_of_order=out_of_order)

    def _started(self, generation: Generation, lease: Lease) -> Generation:
        # Either way a checkpoint is recorded (0 is before every event of every store), so that
        # "no checkpoint" means "never started" (see ProjectionRunner._run_leased).
        head = 0 if self._start_from is StartFrom.BEGINNING else self._events.head_position()
        pending = 0
        with self._store.transaction(self._name, generation.number, lease=lease) as transaction:
            if head > 0 and self._engine.has_deadlines:
                pending = self._index_deadlines(transaction, head)
            transaction.set_checkpoint(max(head, 0), 0)
        settled = 0
        if head > 0:
            # Decisions its streams recorded and never dispatched (a process manager dropped and
            # started again): they are its own, not history's, and their ids make them once.
            for stream in self._engine.unsettled_streams(head):
                if self._mine(stream):
                    settled += self._engine.settle(stream)
        self._log.info(
            "reactor.started",
            start_from=self._start_from.value,
            position=head,
            pending_deadlines=pending,
            commands_settled=settled,
        )
        live = self._store.describe(self._name).live
        return generation if live is None else live

    def _index_deadlines(self, transaction: ReadModelWriter, head: int) -> int:
        """Index the deadlines its streams hold up to ``head``; how many are pending."""
        deadline_types = [t for t in self._engine.event_types if t.startswith("ProcessDeadline")]
        for recorded in read_after(self._events, None, filter=EventFilter.for_event_types(deadline_types)):
            if recorded.position > head:
                break
            if self._mine(recorded.stream):
                self._projection.apply(recorded, transaction)
        return transaction.table(DEADLINES_TABLE).count()

    def _idle(self, generation: Generation, lease: Lease) -> None:
        if not self._engine.has_deadlines or time.monotonic() < self._next_deadline_check:
            return
        self._next_deadline_check = time.monotonic() + self._deadline_check_interval
        self._fire_due(generation, lease)

    def fire_due_deadlines(self) -> int:
        """Fire the deadlines the clock has passed (the runner does this when idle); how many fired.

        Each is recorded once whoever calls this and however often: its ``ProcessDeadlineFired``
        has an id fixed by the deadline and is appended at the instance's expected version, after
        checking, on the instance's stream, that the deadline is still pending. The runner calls
        it under its lease whenever it is idle; call it yourself only to fire deadlines while no
        runner runs (another process's runner then replays the instances it had kept). Raises
        :class:`~projections.errors.ProjectionNotFoundError` before the process manager's first run.
        """
        return self._fire_due(None, None)

    def _fire_due(self, generation: Generation | None, lease: Lease | None) -> int:
        now = self._engine.now().timestamp()
        with self._store.read(self._name) as view:
            where = None if self._segment is None else {"segment": self._segment}
            rows = view.table(DEADLINES_TABLE).find(where, order_by="due", limit=_FIRE_LIMIT)
        fired, gone = 0, []
        for row in rows:
            if float(row["due"]) > now:
                break
            if not self._mine(str(row["stream"])):
                continue  # another segment's instance: fired by that segment's runner
            try:
                outcome = self._engine.fire(str(row["stream"]), str(row["deadline_id"]))
            except self._infrastructure:
                raise
            except Exception as exc:  # noqa: BLE001 - logged and tried again at the next check
                self._log.error(
                    "process.deadline_not_fired",
                    stream=row["stream"],
                    deadline=row["deadline"],
                    error=f"{type(exc).__name__}: {exc}",
                )
                continue
            fired += outcome is FireOutcome.FIRED
            if outcome is FireOutcome.GONE:
                gone.append(str(row["deadline_id"]))
        if gone and generation is not None and lease is not None:
            # Deadlines no longer pending whose end the index has not seen (their stream was
            # deleted, or the event that ended them was parked): out of the way of the others.
            with self._store.transaction(self._name, generation.number, lease=lease) as transaction:
                table = transaction.table(DEADLINES_TABLE)
                for deadline_id in gone:
                    table.delete(deadline_id)
        return fired
