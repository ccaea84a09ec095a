"""The ``escqrs`` command: the demo, projection operations, rebuilds and audit-trail replay.

::

    escqrs demo                                   the example bank end to end, on a fresh SQLite file
    escqrs streams list | read STREAM             what the event store holds
    escqrs audit history | state | diff | export | trace
    escqrs projections list | status | run | rebuild NAME | parked | retry NAME

Configuration comes from options or the environment: ``--store``/``ESCQRS_STORE`` (the event
store URI), ``--read-models``/``ESCQRS_READ_MODELS`` (the read model store URI) and
``--app``/``ESCQRS_APP`` (the application spec, ``module:attribute``, default the bank example).

Every read command takes ``--json``. Exit codes: 0 success, 1 failure (one line on stderr; the
traceback too with ``--debug``), 2 usage error. Logs go to stderr (``-v`` info, ``-vv`` debug).

The command lives in the composition root (:mod:`escqrs`), which imports both sides. It
configures structlog (the library never does), and it imports the read side (``projections``)
only in the commands that need it, so that ``escqrs --help`` and ``escqrs streams`` start fast.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Annotated

import typer

from escqrs._cli._common import (
    configure_logging,
    err_console,
    error_line,
    examples,
    markup,
    scrubbed,
    settings,
)
from escqrs._cli.audit import audit_app
from escqrs._cli.demo import demo
from escqrs._cli.projections import projections_app
from escqrs._cli.streams import streams_app

__all__ = ["app", "main"]

app = typer.Typer(
    name="escqrs",
    help=(
        "Operate an event-sourced CQRS application: demo, projections, rebuilds and audit-trail replay. "
        "Configure with --store/ESCQRS_STORE, --read-models/ESCQRS_READ_MODELS and --app/ESCQRS_APP."
    ),
    epilog=examples("escqrs demo", "escqrs audit history Account-42 --store sqlite:///bank.db"),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command(
    "demo",
    epilog=examples("escqrs demo", "escqrs demo --store sqlite:///bank.db --read-models sqlite:///views.db"),
)(demo)
app.add_typer(streams_app, name="streams")
app.add_typer(audit_app, name="audit")
app.add_typer(projections_app, name="projections")


@app.callback()
def _root(
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="Log more to stderr (-v info, -vv debug).")
    ] = 0,
    debug: Annotated[
        bool, typer.Option("--debug", envvar="ESCQRS_DEBUG", help="Debug logs, and tracebacks on errors.")
    ] = False,
) -> None:
    configure_logging(verbose=verbose, debug=debug)


def main(argv: list[str] | None = None) -> None:
    """Run ``escqrs`` with ``argv`` (default: the process arguments) and exit with its status."""
    configure_logging()
    try:
        app(args=argv, prog_name="escqrs")
    except BrokenPipeError:
        # The reader went away (``escqrs audit export --all | head``): not an error of ours.
        # Point stdout at devnull so that the interpreter's final flush does not complain.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - the one place every failure becomes one line
        if settings.debug:
            # A plain traceback: no local variables (they hold connection strings and payloads).
            sys.stderr.write(scrubbed("".join(traceback.format_exception(exc))))
        err_console().print(f"[bold red]error:[/bold red] {markup(error_line(exc))}", soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
