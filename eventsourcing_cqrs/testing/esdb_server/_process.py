"""The test server in a child process, as ``python -m eventsourcing_cqrs.testing.esdb_server`` runs it.

Why a child process: a server in the test's own interpreter shares its GIL with the client, so
every gRPC message costs both ends' Python on one lock (a catch-up through the adapter ran at a
third of the speed it reaches with the server apart). The child listens on a free port
(``--port 0``), prints one banner line with its URI on stdout, logs to stderr (kept in a
temporary file, quoted when it fails to start) and exits cleanly on SIGTERM.

Nothing is left behind: :meth:`EsdbServerProcess.stop` sends SIGTERM, then SIGKILL if it has not
exited within its timeout; it runs on ``with`` exit, when the handle is garbage-collected, and at
interpreter exit. Only a SIGKILL of the parent itself can orphan the child.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import tempfile
import time
import weakref
from types import TracebackType
from typing import IO, Final, Self

__all__ = ["EsdbServerProcess", "EsdbServerProcessError"]

#: How the command-line server (``__main__``) announces its URI, and how this module finds it.
BANNER: Final = "EventStoreDB test server listening: "
_MODULE: Final = "eventsourcing_cqrs.testing.esdb_server"


class EsdbServerProcessError(RuntimeError):
    """The child server did not start: it exited, or printed no banner in time."""


def _terminate(process: subprocess.Popen[str], timeout: float) -> int:
    """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; the exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()
    return process.returncode


class EsdbServerProcess:
    """:class:`~eventsourcing_cqrs.testing.esdb_server.EsdbTestServer` in a child process.

    ``EsdbServerProcess(strict=True).start()`` returns once the child listens; ``uri`` is its
    connection string and ``pid`` its process id. ``args`` are more command-line options
    (e.g. ``["--tls"]``). Use it as a context manager, or call :meth:`stop`. Fault injection
    (``stop()``/``start()`` of the server itself, ``latency``) needs the in-process server.
    """

    def __init__(
        self,
        *,
        strict: bool = False,
        host: str = "127.0.0.1",
        args: tuple[str, ...] = (),
        startup_timeout: float = 30.0,
    ) -> None:
        self._command = [sys.executable, "-m", _MODULE, "--host", host, "--port", "0", *args]
        if strict:
            self._command.append("--strict")
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[str] | None = None
        self._uri: str | None = None
        self._finalizer: weakref.finalize[[subprocess.Popen[str], float], EsdbServerProcess] | None = None

    @property
    def uri(self) -> str:
        """The child's connection string (``esdb://host:port?Tls=false``)."""
        if self._uri is None:
            raise RuntimeError("The server process is not running: call start() first.")
        return self._uri

    @property
    def pid(self) -> int | None:
        """The child's process id, ``None`` before :meth:`start`."""
        return None if self._process is None else self._process.pid

    def start(self) -> Self:
        """Start the child and wait for its banner; raise :class:`EsdbServerProcessError` if none
        comes within ``startup_timeout`` seconds (the child is then stopped)."""
        if self._process is not None:
            raise RuntimeError("The server process was already started.")
        stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed below, after the child
        try:
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            self._process = subprocess.Popen(
                self._command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env
            )
            # weakref.finalize also runs at interpreter exit: an unstopped child never outlives us.
            self._finalizer = weakref.finalize(self, _terminate, self._process, 5.0)
            try:
                self._uri = self._read_banner(self._process, stderr)
            except BaseException:
                self.stop()
                raise
        finally:
            stderr.close()
        return self

    def _read_banner(self, process: subprocess.Popen[str], stderr: IO[str]) -> str:
        assert process.stdout is not None
        deadline = time.monotonic() + self._startup_timeout
        while (remaining := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([process.stdout], [], [], remaining)
            if not ready:
                break
            line = process.stdout.readline()
            if line.startswith(BANNER):
                return line[len(BANNER) :].strip()
            if not line:  # end of file: the child has exited
                process.wait()
                stderr.seek(0)
                raise EsdbServerProcessError(
                    f"The test server exited with code {process.returncode} before listening: "
                    f"{stderr.read().strip()[-2000:]}"
                )
        raise EsdbServerProcessError(
            f"The test server printed no banner within {self._startup_timeout} seconds."
        )

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the child, SIGKILL it after ``timeout`` seconds; its exit code (``None`` if it
        was never started). Safe to call more than once."""
        if self._process is None:
            return None
        if self._finalizer is not None:
            self._finalizer.detach()
        self._uri = None
        return _terminate(self._process, timeout)

    def __enter__(self) -> Self:
        return self if self._process is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
