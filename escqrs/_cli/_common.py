"""What every ``escqrs`` command shares: options, settings, stores, logging, output and errors."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import structlog
import typer
from rich.console import Console
from rich.markup import escape

from escqrs.app import AppSpec, load_app
from eventsourcing_cqrs._uri import parse_sqlite_uri, redact_text, redact_uri
from eventsourcing_cqrs.errors import CQRSError
from eventsourcing_cqrs.event_store.port import EventStore

if TYPE_CHECKING:
    from structlog.typing import EventDict, ExcInfo, WrappedLogger

    from projections.read_model_store.port import ReadModelStore

__all__ = [
    "DEFAULT_APP",
    "AppOption",
    "CliError",
    "DebugOption",
    "JsonOption",
    "ReadModelsOption",
    "StoreOption",
    "configure_logging",
    "emit_json",
    "emit_json_array",
    "err_console",
    "event_store",
    "examples",
    "format_time",
    "open_app",
    "out_console",
    "read_model_store",
    "redacted",
    "scrubbed",
    "settings",
]

#: The application used when neither ``--app`` nor ``ESCQRS_APP`` names one.
DEFAULT_APP = "escqrs.examples.bank.app:bank"


class CliError(Exception):
    """A failure to report as one line on stderr, with exit code 1."""


@dataclass
class Settings:
    """Process-wide switches set by the root callback and by each command's own options."""

    debug: bool = False
    verbose: int = 0


settings = Settings()

# -- options shared by the commands (Annotated aliases keep each signature short) ---------------

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        envvar="ESCQRS_STORE",
        metavar="URI",
        help="Event store: sqlite:///events.db, esdb://host:2113?Tls=false or memory:.",
        show_default=False,
    ),
]
ReadModelsOption = Annotated[
    str | None,
    typer.Option(
        "--read-models",
        envvar="ESCQRS_READ_MODELS",
        metavar="URI",
        help="Read model store: sqlite:///read_models.db or postgresql://user@host/db.",
        show_default=False,
    ),
]
AppOption = Annotated[
    str,
    typer.Option(
        "--app",
        envvar="ESCQRS_APP",
        metavar="MODULE:ATTR",
        help="The application spec (an escqrs.app.AppSpec).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
DebugOption = Annotated[
    bool, typer.Option("--debug", envvar="ESCQRS_DEBUG", help="Debug logs, and tracebacks on errors.")
]


# -- secrets: no output of the command shows a password or a local variable -------------------

#: The store URIs this process was given: whatever it prints is cleaned of their secrets.
_uris: list[str] = []


def _remember(uri: str) -> str:
    if uri not in _uris:
        _uris.append(uri)
    return uri


def scrubbed(text: str) -> str:
    """``text`` without any secret of the store URIs given to this process (see ``redact_text``)."""
    return redact_text(text, *_uris) if _uris else text


def _exception_summary(exc_info: ExcInfo | Any) -> str:
    value = exc_info[1] if isinstance(exc_info, tuple) else exc_info
    return error_line(value) if isinstance(value, BaseException) else type(value).__name__


def _log_exception(sio: TextIO, exc_info: ExcInfo) -> None:
    """How a log shows an exception: its one-line summary; with ``--debug`` a plain traceback.

    Never structlog's default, rich's traceback with ``show_locals=True``: local variables hold
    connection strings and event payloads.
    """
    if settings.debug:
        structlog.dev.plain_traceback(sio, exc_info)
    else:
        sio.write(" exception=" + repr(_exception_summary(exc_info)))


class _Renderer:
    """structlog's console renderer, with safe exceptions and no secrets of the given URIs."""

    def __init__(self, *, colors: bool) -> None:
        self._render = structlog.dev.ConsoleRenderer(colors=colors, exception_formatter=_log_exception)

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
        return scrubbed(self._render(logger, name, event_dict))


class _Formatter(logging.Formatter):
    """The stdlib logs' format, with the same rules as :class:`_Renderer` (drivers log too)."""

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's name
        if settings.debug:
            return super().formatException(ei)
        return "  " + _exception_summary(ei)

    def format(self, record: logging.LogRecord) -> str:
        return scrubbed(super().format(record))


# -- logging: the library never configures structlog; the command does ------------------------


def configure_logging(*, verbose: int | None = None, debug: bool | None = None) -> None:
    """Send structlog and stdlib logs to stderr.

    Warnings and errors by default, info with ``-v``, debug with ``-vv`` or ``--debug``. An
    exception in a log is its one-line summary (a plain traceback, without local variables,
    with ``--debug``), and no log line shows a secret of the store URIs.
    """
    if verbose is not None:
        settings.verbose = max(settings.verbose, verbose)
    if debug:
        settings.debug = True
    if settings.debug or settings.verbose >= 2:
        level = logging.DEBUG
    elif settings.verbose == 1:
        level = logging.INFO
    else:
        level = logging.WARNING
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False),
            _Renderer(colors=sys.stderr.isatty()),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


# -- consoles and output -----------------------------------------------------------------------


def _width() -> int | None:
    # Rich wraps at 80 columns when not writing to a terminal; piped tables read better wider.
    if sys.stdout.isatty() or os.environ.get("COLUMNS"):
        return None
    return 160


def out_console() -> Console:
    """The console for results (stdout)."""
    return Console(highlight=False, width=_width())


def err_console() -> Console:
    """The console for messages, progress and errors (stderr)."""
    return Console(stderr=True, highlight=False)


def emit_json(value: Any) -> None:
    """Print ``value`` as indented JSON on stdout."""
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def emit_json_array(items: Iterable[Any]) -> int:
    """Print a JSON array on stdout one item at a time (constant memory); returns the count."""
    count = 0
    write = sys.stdout.write
    write("[")
    for item in items:
        write(",\n  " if count else "\n  ")
        write(json.dumps(item, ensure_ascii=False))
        count += 1
    write("\n]\n" if count else "]\n")
    sys.stdout.flush()
    return count


def format_time(moment: datetime) -> str:
    """A recorded time in UTC to the millisecond: ``2024-05-01 12:00:00.123Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def examples(*commands: str) -> str:
    """A help epilog listing example command lines, one per paragraph."""
    return "[bold]Examples[/bold]\n\n" + "\n\n".join(f"  {markup(command)}" for command in commands)


def markup(text: object) -> str:
    """``text`` escaped for rich markup."""
    return escape(str(text))


# -- stores and the application ----------------------------------------------------------------


def require_uri(uri: str | None, option: str, env: str) -> str:
    """``uri``, or a usage error saying how to give it."""
    if not uri:
        raise typer.BadParameter(f"give {option} URI or set {env}", param_hint=f"'{option}'")
    return _remember(uri)


def open_event_store(uri: str, *, must_exist: bool = True) -> EventStore:
    """The event store named by ``uri``; an SQLite file must already exist unless ``must_exist`` is false."""
    _remember(uri)
    if uri.split(":", 1)[0].lower() == "sqlite" and must_exist:
        # connect() would create an empty database: a typo in a path must not look like an empty store.
        parsed = parse_sqlite_uri(uri, what="event store URI", example="events.db")
        if not parsed.exists:
            raise CliError(
                f"The event store file {str(parsed.file)!r} does not exist (from --store {redacted(uri)})."
            )
    from eventsourcing_cqrs.event_store import connect  # noqa: PLC0415 - keeps start-up light

    return connect(uri)


@contextmanager
def event_store(uri: str | None, *, must_exist: bool = True) -> Iterator[EventStore]:
    """Open the event store of ``--store``/``ESCQRS_STORE`` for the duration of a command."""
    store = open_event_store(require_uri(uri, "--store", "ESCQRS_STORE"), must_exist=must_exist)
    try:
        yield store
    finally:
        store.close()


@contextmanager
def read_model_store(uri: str | None, *, must_exist: bool = True) -> Iterator[ReadModelStore]:
    """Open the read model store of ``--read-models``/``ESCQRS_READ_MODELS`` for a command."""
    checked = require_uri(uri, "--read-models", "ESCQRS_READ_MODELS")
    if checked.split(":", 1)[0].lower() == "sqlite" and must_exist:
        parsed = parse_sqlite_uri(checked, what="read model store URI", example="views.db")
        if not parsed.exists:
            raise CliError(
                f"The read model store file {str(parsed.file)!r} does not exist (from --read-models)."
            )
    from projections.read_model_store import connect  # noqa: PLC0415 - the read side only when a command needs it

    store = connect(checked)
    try:
        yield store
    finally:
        store.close()


def open_app(reference: str) -> AppSpec:
    """The application spec named by ``--app``/``ESCQRS_APP``, importable from the working directory."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        # As uvicorn and gunicorn do: an application module beside the user is importable.
        sys.path.insert(0, cwd)
    return load_app(reference)


def redacted(uri: str) -> str:
    """``uri`` fit to print: its passwords replaced by ``***`` (see ``redact_uri``)."""
    return redact_uri(uri)


def error_line(exc: BaseException) -> str:
    """The one line that reports ``exc`` (without a secret of the store URIs given)."""
    line = str(exc) if isinstance(exc, CliError | CQRSError) else f"{type(exc).__name__}: {exc}"
    return scrubbed(line)
