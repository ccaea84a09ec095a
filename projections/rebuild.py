"""Blue/green rebuilds: a new generation built from the start of ``$all`` beside the live one.

While the new generation is being built, the live one keeps serving queries (and, if a runner
of the same version is running, keeps following new events). When the new generation has
caught up with ``$all``, one transaction makes it live and drops the old one; a running
runner notices at its next batch and continues from the new generation's checkpoint.

Bumping a projection's ``version`` triggers the same rebuild from the runner itself. A
rebuild that is interrupted (stopped, killed) resumes from its own checkpoint the next time
one is started for the same version. Progress is reported after every batch::

    def show(progress: Progress) -> None:
        eta = "?" if progress.eta is None else f"{progress.eta:.0f} s"
        print(f"{progress.done}/{progress.total} at {progress.rate:.0f}/s, ETA {eta}")

    report = rebuild(AccountList(), events, store, progress=show)
"""

from __future__ import annotations

from eventsourcing_cqrs.event_store.port import EventReader
from projections._progress import Progress, ProgressCallback, RebuildReport
from projections.projection import Projection
from projections.read_model_store.port import ReadModelStore
from projections.runner import ProjectionRunner

__all__ = ["Progress", "ProgressCallback", "RebuildReport", "rebuild"]


def rebuild(
    projection: Projection,
    events: EventReader,
    store: ReadModelStore,
    *,
    progress: ProgressCallback | None = None,
    batch_size: int = 1000,
    runner: ProjectionRunner | None = None,
) -> RebuildReport | None:
    """Rebuild ``projection``'s read model from scratch without taking the live one down.

    Returns what was done, or ``None`` if the rebuild was stopped (``runner.stop()``) before it
    switched; run it again to resume. Pass ``runner`` to be able to stop it from another thread.
    """
    worker = runner or ProjectionRunner(projection, events, store, batch_size=batch_size, batch_delay=0.5)
    return worker.rebuild(progress)
