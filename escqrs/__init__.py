"""The composition root: where the write side and the read side meet.

:mod:`eventsourcing_cqrs` (the write side and the event store) and :mod:`projections` (the read
side) never import this package; it imports both, to give tools one view of an application:

* :class:`AppSpec` — an application's events, aggregates and projections, for the ``escqrs``
  command (``--app module:attribute``) and for :class:`~eventsourcing_cqrs.audit.AuditTrail`;
* :class:`AggregateSpec` — one aggregate type (defined by the write side, re-exported here
  because every spec uses it);
* :mod:`escqrs.cli` — the ``escqrs`` command;
* :mod:`escqrs.examples.bank` — the example bank that ``escqrs demo`` runs, shipped with the
  package so that the demo works from an installed wheel.
"""

from escqrs.app import AppSpec, DemoContext, load_app
from eventsourcing_cqrs.audit import AggregateSpec

__all__ = ["AggregateSpec", "AppSpec", "DemoContext", "load_app"]
