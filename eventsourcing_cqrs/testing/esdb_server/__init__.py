"""An in-process EventStoreDB-compatible gRPC server, for tests: a test double, not a store.

``EsdbTestServer`` speaks the subset of EventStoreDB 24.x's gRPC API that esdbclient 1.1.x uses
(Streams Read/Append/BatchAppend/Delete/Tombstone, an empty PersistentSubscriptions.List and a
single-node Gossip.Read), with the behaviour given in GRPC_SPEC.md: positions, expected versions
and idempotent appends, soft deletes and tombstones, ``$$stream`` metadata, filters, catch-up
subscriptions with checkpoints and caught-up, and errors exactly as each call reports them.

It keeps everything in memory and never persists or scavenges. By default it is an insecure
node (no TLS, no authentication, no ACLs); ``EsdbTestServer(tls=True)`` is a secure one: TLS with
a certificate it generates, basic-auth users (:class:`EsdbUser`) and EventStoreDB 24.10's default
access rules. Use it to run EventStoreDB-path tests without Docker; run production on
EventStoreDB itself.

``EsdbTestServer(strict=True)`` (``--strict`` on the command line) reproduces EventStoreDB 24.10
where the default is more lenient: invalid ``$all`` positions, the ``Position.End`` checkpoint, a
bounded idempotency cache, .NET regex filters, empty stream names and ServerFeatures.

From the shell: ``python -m eventsourcing_cqrs.testing.esdb_server --host localhost --port 2113``;
from Python in a child process: :class:`EsdbServerProcess`.
"""

from dataclasses import dataclass
from pathlib import Path

from eventsourcing_cqrs.testing.esdb_server._process import EsdbServerProcess, EsdbServerProcessError
from eventsourcing_cqrs.testing.esdb_server._security import EsdbUser
from eventsourcing_cqrs.testing.esdb_server._server import EsdbTestServer, PortInUseError
from eventsourcing_cqrs.testing.esdb_server._test_cluster import EsdbTestCluster

__all__ = [
    "EsdbEndpoint",
    "EsdbServerProcess",
    "EsdbServerProcessError",
    "EsdbTestCluster",
    "EsdbTestServer",
    "EsdbUser",
    "PortInUseError",
]


@dataclass(frozen=True)
class EsdbEndpoint:
    """Where the EventStoreDB under test listens: what the ``esdb_server`` fixture yields.

    ``uri`` is the connection string to give :func:`eventsourcing_cqrs.event_store.connect`;
    ``server`` is the in-process test server (for fault injection), else ``None``;
    ``ca_file`` is the CA certificate a TLS endpoint's ``uri`` names in ``tlsCAFile`` (else ``None``);
    ``process`` is the test server running in a child process, else ``None``. With neither
    ``server`` nor ``process`` it is a real EventStoreDB (``ESDB_URI``): see :attr:`is_test_server`.
    """

    uri: str
    server: EsdbTestServer | None = None
    ca_file: Path | None = None
    process: EsdbServerProcess | None = None

    @property
    def is_test_server(self) -> bool:
        """Whether this is the test double (in process or not), not a real EventStoreDB."""
        return self.server is not None or self.process is not None
