"""Exit codes (0 ok, 1 failure, 2 usage), one-line errors, tracebacks only with --debug, and help."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from typer.testing import CliRunner

from cli._helpers import escqrs
from escqrs._cli._common import redacted, settings
from escqrs.cli import app


def test_a_failure_is_one_line_on_stderr_with_exit_code_1() -> None:
    result = escqrs("audit", "history", "Account-nobody", "--store", "memory:")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: Stream 'Account-nobody' was not found."
    assert result.stdout == ""


def test_debug_adds_the_traceback() -> None:
    result = escqrs("audit", "state", "Account-nobody", "--debug", "--store", "memory:")
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.rstrip().endswith("error: Account 'nobody' does not exist.")


def test_a_missing_sqlite_file_is_reported_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    result = escqrs("streams", "list", "--store", f"sqlite:///{missing}")
    assert result.returncode == 1
    assert "does not exist" in result.stderr
    assert not missing.exists()


def test_a_missing_sqlite_read_model_file_is_reported_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "views.db"
    result = escqrs("projections", "parked", "--read-models", f"sqlite:///{missing}?durable=false")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: The read model store file {str(missing)!r} does not exist (from --read-models)."
    )
    assert not missing.exists()


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        (
            "sqlite://",
            "error: Invalid event store URI 'sqlite://': a sqlite URI needs a path: sqlite:///events.db.",
        ),
        ("sqlite:///x.db?durable=maybe", "error: Invalid durable option 'maybe': use true or false."),
    ],
)
def test_a_malformed_sqlite_uri_is_one_line_naming_the_mistake(
    tmp_path: Path, uri: str, message: str
) -> None:
    result = escqrs("streams", "list", "--store", uri, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["audit", "history", "Account-1"], "give --store URI or set ESCQRS_STORE"),
        (
            [
                "audit",
                "state",
                "Account-1",
                "--store",
                "memory:",
                "--at-version",
                "1",
                "--at-time",
                "2024-01-01",
            ],
            "not both",
        ),
        (["audit", "export", "--store", "memory:"], "give a STREAM or --all"),
    ],
)
def test_usage_errors_exit_with_code_2(args: list[str], message: str) -> None:
    result = escqrs(*args)
    assert result.returncode == 2
    assert message in result.stderr


COMMANDS = [
    [],
    ["demo"],
    ["streams"],
    ["streams", "list"],
    ["streams", "read"],
    ["audit"],
    ["audit", "history"],
    ["audit", "state"],
    ["audit", "diff"],
    ["audit", "export"],
    ["audit", "trace"],
    ["projections"],
    ["projections", "list"],
    ["projections", "status"],
    ["projections", "run"],
    ["projections", "rebuild"],
    ["projections", "parked"],
    ["projections", "retry"],
]


@pytest.fixture
def in_process_cli() -> Iterator[None]:
    """Run the command in this process, then undo the logging set-up it does (as a CLI should),
    so that later tests see structlog and logging as they were."""
    structlog_config = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    switches = (settings.debug, settings.verbose)
    try:
        yield
    finally:
        structlog.configure(**structlog_config)
        root.handlers[:] = handlers
        root.setLevel(level)
        settings.debug, settings.verbose = switches


@pytest.mark.usefixtures("in_process_cli")
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "escqrs")
def test_every_command_has_help_with_an_example(command: list[str]) -> None:
    # In-process through typer's runner: forty subprocesses would cost more than all else here.
    result = CliRunner().invoke(app, [*command, "--help"], prog_name="escqrs", env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Usage: escqrs" in result.output
    assert "Examples" in result.output
    assert "escqrs " + " ".join(command) in result.output


def test_the_console_script_answers_help() -> None:
    result = escqrs("--help")
    assert result.returncode == 0
    assert "audit" in result.stdout
    assert "projections" in result.stdout


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("esdb://admin:changeit@db1:2113?Tls=true", "esdb://admin:***@db1:2113?Tls=true"),
        ("postgresql://app:s3cret@pg/views", "postgresql://app:***@pg/views"),
        ("postgresql://app@pg/views", "postgresql://app@pg/views"),
        ("sqlite:///events.db", "sqlite:///events.db"),
    ],
)
def test_store_uris_are_printed_without_their_passwords(uri: str, shown: str) -> None:
    assert redacted(uri) == shown


@pytest.mark.parametrize(
    ("reference", "name"),
    [("escqrs.examples.bank.account:Account", "Account"), ("cli._secret_app:Failing", "Failing")],
)
def test_an_app_reference_to_a_class_is_refused_without_calling_it(reference: str, name: str) -> None:
    result = escqrs("projections", "list", "--app", reference)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: Invalid application {reference!r}: {reference} is a class ({name}), not an AppSpec: "
        "point --app at an AppSpec or a function returning one."
    )


def test_an_app_reference_to_a_function_returning_a_spec_is_called() -> None:
    result = escqrs("projections", "list", "--app", "cli._secret_app:make_app", "--json")
    assert result.returncode == 0, result.stderr
    assert "cli_failing" in result.stdout
