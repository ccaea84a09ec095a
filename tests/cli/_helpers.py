"""Running the ``escqrs`` console script in a subprocess, and the data the tests share."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from eventsourcing_cqrs.event_store import connect
from eventsourcing_cqrs.event_store.port import EventFilter

__all__ = ["COMMAND", "Backend", "environment", "escqrs", "newest_account", "ok", "start_escqrs"]

_SCRIPT = Path(sys.executable).with_name("escqrs")
#: The console script when it is installed beside this interpreter, else the module.
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "escqrs.cli"]
ROOT = Path(__file__).resolve().parents[2]


def environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without ``ESCQRS_*`` settings, plus ``env``."""
    result = {k: v for k, v in os.environ.items() if not k.startswith("ESCQRS_")}
    # Wide enough that tables never wrap the values the tests look for; ``tests`` on the path
    # for the test application ``cli._app:app``.
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    result.update({"COLUMNS": "220", "NO_COLOR": "1", "PYTHONPATH": path})
    result.update(env or {})
    return result


def escqrs(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run ``escqrs args...`` and return what it did (never raises on a non-zero exit)."""
    return subprocess.run(
        [*COMMAND, *args],
        capture_output=True,
        text=True,
        env=environment(env),
        cwd=cwd or ROOT,
        timeout=timeout,
        check=False,
    )


def start_escqrs(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start ``escqrs args...`` in the background (to signal it)."""
    return subprocess.Popen(
        [*COMMAND, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(env),
        cwd=ROOT,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """The stdout of a run that must have succeeded (its stderr shown if not)."""
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result.stdout


@dataclass(frozen=True)
class Backend:
    """An event store written by one run of the bank demo, and where its read models went."""

    name: str
    store: str
    read_models: str
    ada: str
    grace: str
    correlation_id: str

    def recorded_at(self, stream: str, revision: int) -> datetime:
        """When the event at ``revision`` of ``stream`` was recorded (read in this process)."""
        store = connect(self.store)
        try:
            return next(store.read_stream(stream, from_revision=revision, limit=1)).recorded_at
        finally:
            store.close()

    def env(self) -> dict[str, str]:
        """The configuration as environment variables (the tests also pass options)."""
        return {"ESCQRS_STORE": self.store, "ESCQRS_READ_MODELS": self.read_models}


def newest_account(store_uri: str, owner: str) -> tuple[str, str]:
    """The stream of the newest account of ``owner``, and its opening's correlation id."""
    store = connect(store_uri)
    try:
        for recorded in store.read_all(backwards=True, filter=EventFilter.for_event_types(["AccountOpened"])):
            if json.loads(recorded.data)["owner"] == owner:
                return recorded.stream, json.loads(recorded.metadata)["$correlationId"]
    finally:
        store.close()
    raise AssertionError(f"no account of {owner} in {store_uri}")
