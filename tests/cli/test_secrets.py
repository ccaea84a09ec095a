"""No output shows a password or a local variable.

A unique token stands for a secret. It is fed through every form a store URI takes it in (the
userinfo password of ``esdb://``, ``esdb+discover://``, ``postgresql://``, ``postgres://`` and of
unknown schemes; the ``password``-like query parameters) and through every entry point: the
errors of both ``connect()``, the ``repr`` of the stores, their logs (as structlog captures them,
and as the command renders them), and the ``escqrs`` command's stdout and stderr, with and
without ``--debug``. Then as an event payload, seen by a projection handler that fails: a
traceback that shows local variables would print it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import structlog
from structlog.testing import capture_logs

from cli._helpers import escqrs
from cli._secret_app import FAILING
from escqrs._cli import _common
from escqrs._cli._common import configure_logging, error_line, redacted, require_uri, settings
from eventsourcing_cqrs._uri import redact_text, redact_uri
from eventsourcing_cqrs.errors import CQRSError
from eventsourcing_cqrs.event_store import NewEvent, StreamState
from eventsourcing_cqrs.event_store import connect as connect_events
from eventsourcing_cqrs.event_store.esdb import EsdbEventStore
from eventsourcing_cqrs.testing.esdb_server import EsdbEndpoint
from projections.read_model_store import connect as connect_read_models
from projections.read_model_store.postgres import PostgresReadModelStore

#: The secret: it must never be printed, logged or shown.
TOKEN = f"s3cr3t-{uuid.uuid4().hex}"
POSTGRES = os.environ.get("POSTGRES_URI", "postgresql://postgres@127.0.0.1:5432/test")
#: A port nothing listens on.
CLOSED = "127.0.0.1:1"
#: A line of the command's log output: ``12:00:00 [warning  ] event key=value...``.
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d \[")


def hidden(*texts: object) -> None:
    """Assert that none of ``texts`` shows the secret."""
    for text in texts:
        assert TOKEN not in str(text), f"the secret is shown in:\n{text}"


def with_password(uri: str, password: str = TOKEN, *, user: str = "admin") -> str:
    """``uri`` (``scheme://host...``) with ``user`` and ``password`` in its userinfo."""
    scheme, _, rest = uri.partition("://")
    return f"{scheme}://{user}:{password}@{rest.split('@', 1)[-1]}"


@pytest.fixture(scope="module")
def postgres() -> str:
    """The PostgreSQL URI (without password: the server trusts); skips when there is none."""
    try:
        psycopg.connect(POSTGRES, connect_timeout=3).close()
    except psycopg.Error as exc:
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail(f"REQUIRE_POSTGRES=1 but no PostgreSQL at {POSTGRES}: {exc}")
        pytest.skip(f"no PostgreSQL at {POSTGRES}: {exc}")
    return POSTGRES


@pytest.fixture
def schema(postgres: str) -> Iterator[str]:
    name = f"secrets_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(postgres, autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def postgres_with_password(postgres: str, schema: str, *, database: str | None = None) -> str:
    """The PostgreSQL URI with the secret as password (the server trusts: any password does)."""
    uri = with_password(postgres, user="postgres")
    if database is not None:
        uri = uri.rsplit("/", 1)[0] + "/" + database
    return f"{uri}?schema={schema}"


# -- the one redaction -------------------------------------------------------------------------

REDACTED = [
    (f"esdb://admin:{TOKEN}@db1:2113?Tls=true", "esdb://admin:***@db1:2113?Tls=true"),
    (f"esdb+discover://admin:{TOKEN}@cluster:2113", "esdb+discover://admin:***@cluster:2113"),
    (f"esdb://admin:{TOKEN}@h1:2113,h2:2113?Tls=false", "esdb://admin:***@h1:2113,h2:2113?Tls=false"),
    (f"postgresql://app:{TOKEN}@pg:5432/views", "postgresql://app:***@pg:5432/views"),
    (f"postgres://app:{TOKEN}@pg/views", "postgres://app:***@pg/views"),
    (f"esdbx://admin:{TOKEN}@host:2113", "esdbx://admin:***@host:2113"),
    (f"postgres+psycopg://app:{TOKEN}@pg/views", "postgres+psycopg://app:***@pg/views"),
    (f"postgresql://app@pg/views?password={TOKEN}", "postgresql://app@pg/views?password=***"),
    (
        f"postgresql://app@pg/views?Password={TOKEN}&sslmode=require",
        "postgresql://app@pg/views?Password=***&sslmode=require",
    ),
    (f"postgresql://app@pg/views?sslpassword={TOKEN}", "postgresql://app@pg/views?sslpassword=***"),
    (f"postgresql://app@pg/views?pass={TOKEN}", "postgresql://app@pg/views?pass=***"),
    (f"postgresql://app@pg/views?pass%77ord={TOKEN}", "postgresql://app@pg/views?pass%77ord=***"),
    (f"esdb://db1:2113?Tls=false&PASSWORD={TOKEN}", "esdb://db1:2113?Tls=false&PASSWORD=***"),
    (f"sqlite:///events.db?password={TOKEN}", "sqlite:///events.db?password=***"),
    (f"esdb://admin:p%40{TOKEN}@db1:2113", "esdb://admin:***@db1:2113"),
    (f"esdb://admin:p@{TOKEN}@db1:2113", "esdb://admin:***@db1:2113"),
    (f"postgresql://app:{TOKEN}@pg/views#frag", "postgresql://app:***@pg/views#***"),
    # In doubt (an unencoded "/", "?" or "#" in the password; not a URI at all): the scheme only.
    (f"esdb://admin:pa/{TOKEN}@db1:2113", "esdb:***"),
    (f"esdb://admin:pa?{TOKEN}@db1:2113", "esdb:***"),
    (f"esdb://admin:pa#{TOKEN}@db1:2113", "esdb:***"),
    (f"postgresql://app:{TOKEN}@[::1/views", "postgresql:***"),
    (f"esdbx:admin:{TOKEN}@host", "esdbx:***"),
    (f"admin:{TOKEN}@host:2113", "admin:***"),
    (f"host=pg user=app password={TOKEN} dbname=views", "host=pg user=app password=*** dbname=views"),
    (f"host=pg password='{TOKEN} x' dbname=views", "host=pg password=*** dbname=views"),
    (f"app:{TOKEN}@pg", "admin:***".replace("admin", "app")),
    # Nothing secret: shown as given.
    ("esdb://db1:2113?Tls=false", "esdb://db1:2113?Tls=false"),
    ("postgresql://app@pg/views?sslmode=require", "postgresql://app@pg/views?sslmode=require"),
    ("sqlite:////var/lib/app/events@2024.db", "sqlite:////var/lib/app/events@2024.db"),
    ("memory:", "memory:"),
    ("events.db", "events.db"),
]


@pytest.mark.parametrize(("uri", "shown"), REDACTED)
def test_redact_uri_hides_every_password(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown
    assert redacted(uri) == shown  # the command's name for it is the same function
    hidden(redact_uri(uri))


def test_redact_uri_shows_only_the_type_of_a_value_that_is_not_a_string() -> None:
    assert redact_uri(f"esdb://admin:{TOKEN}@h".encode()) == "<bytes>"


def test_redact_text_takes_the_secrets_of_a_uri_out_of_a_message() -> None:
    uri = f"postgresql://app:{TOKEN}%ZZ@pg/views?sslpassword=x{TOKEN}"
    message = f'invalid percent-encoded token: "{TOKEN}%ZZ"; sslpassword x{TOKEN}'
    assert redact_text(message, uri) == 'invalid percent-encoded token: "***"; sslpassword ***'


# -- the errors of connect(), on both sides ------------------------------------------------------

EVENT_STORE_ERRORS = [
    f"esdbx://admin:{TOKEN}@host:2113",
    f"ESDBX://admin:{TOKEN}@host:2113?Tls=false",
    f"esdbx:admin:{TOKEN}@host",
    f"admin:{TOKEN}@host:2113",
    f"host=es password={TOKEN}",
    f"sqlite:///events.db?password={TOKEN}",
    f"sqlite:///events.db?Password={TOKEN}&durable=true",
    f"esdb://admin:{TOKEN}@?Tls=false",  # esdbclient: no targets, quoting the URI
    f"esdb://{CLOSED}?Tls=false&password={TOKEN}",  # esdbclient: unknown field
    f"esdb://{CLOSED}?Tls=false&Password={TOKEN}",
    f"esdb://admin:pa/{TOKEN}@{CLOSED}?Tls=false",  # esdbclient would take "admin:pa" for a host
    f"esdb+discover://admin:pa#{TOKEN}@{CLOSED}?Tls=false",
]


@pytest.mark.parametrize("uri", EVENT_STORE_ERRORS)
def test_event_store_connect_errors_hide_the_password(
    uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with capture_logs() as logs, pytest.raises(CQRSError) as caught:
        connect_events(uri)
    hidden(caught.value, repr(caught.value), caught.value.args, logs)
    assert "Invalid event store URI" in str(caught.value)


READ_MODEL_ERRORS = [
    f"postgres+psycopg://app:{TOKEN}@pg/views",
    f"postgresql+psycopg2://app@pg/views?password={TOKEN}",
    f"esdbx:admin:{TOKEN}@host",
    f"sqlite:///views.db?password={TOKEN}",
    f"postgresql://app:{TOKEN}@[::1/views",
    f"postgresql://app:pa/{TOKEN}@{CLOSED}/views",
]


@pytest.mark.parametrize("uri", READ_MODEL_ERRORS)
def test_read_model_store_connect_errors_hide_the_password(
    uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with capture_logs() as logs, pytest.raises(CQRSError) as caught:
        connect_read_models(uri)
    hidden(caught.value, repr(caught.value), caught.value.args, logs)
    assert "Invalid read model store URI" in str(caught.value)


@pytest.mark.parametrize(
    "conninfo",
    [
        # libpq quotes the token it cannot decode: the password itself.
        f"postgresql://app:{TOKEN}%ZZ@{CLOSED}/views",
        f"postgresql://app@{CLOSED}/views?badoption=1&password={TOKEN}",
        f"postgresql://app@{CLOSED}/views?Password={TOKEN}",
        f"host=127.0.0.1 port=1 password={TOKEN} nosuchoption=1",
    ],
)
def test_a_connection_string_libpq_refuses_is_an_error_without_the_password(
    conninfo: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Through connect() when it is a URI, and the store's constructor for any string.
    with caplog.at_level(logging.DEBUG), capture_logs() as logs, pytest.raises(CQRSError) as caught:
        PostgresReadModelStore(conninfo, connect_timeout=1)
    hidden(caught.value, repr(caught.value), logs, caplog.text)
    if conninfo.startswith("postgresql:"):
        with caplog.at_level(logging.DEBUG), pytest.raises(CQRSError) as again:
            connect_read_models(conninfo)
        hidden(again.value, caplog.text)


def test_an_unreachable_postgres_is_reported_without_the_password(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG), capture_logs() as logs, pytest.raises(CQRSError) as caught:
        PostgresReadModelStore(f"postgresql://admin:{TOKEN}@{CLOSED}/views", connect_timeout=1)
    hidden(caught.value, repr(caught.value), logs, caplog.text)


def test_a_refused_postgres_login_is_reported_without_the_password(
    postgres: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    uri = postgres_with_password(postgres, schema, database=f"nodb_{uuid.uuid4().hex[:8]}")
    with caplog.at_level(logging.DEBUG), capture_logs() as logs, pytest.raises(CQRSError) as caught:
        connect_read_models(uri)
    hidden(caught.value, repr(caught.value), logs, caplog.text)


# -- the stores: repr and logs ---------------------------------------------------------------------


@pytest.mark.parametrize("query", ["", "password"])
def test_a_postgres_store_shows_and_logs_no_password(
    postgres: str, schema: str, query: str, caplog: pytest.LogCaptureFixture
) -> None:
    if query:
        uri = f"{postgres}?{query}={TOKEN}&schema={schema}"
    else:
        uri = postgres_with_password(postgres, schema).replace("postgresql://", "postgres://", 1)
    with caplog.at_level(logging.DEBUG), capture_logs() as logs:
        store = connect_read_models(uri)
        try:
            hidden(repr(store), str(store))
            assert store.projection_names() == []
        finally:
            store.close()
    hidden(logs, caplog.text)


def test_an_esdb_store_shows_and_logs_no_password(esdb_server: EsdbEndpoint) -> None:
    uri = with_password(esdb_server.uri)
    with capture_logs() as logs:
        store = connect_events(uri)
        try:
            hidden(repr(store), str(store))
            store.append(
                f"Secret-{uuid.uuid4().hex}",
                [NewEvent(type="Noted", data=b"{}")],
                expected_version=StreamState.NO_STREAM,
            )
        finally:
            store.close()
    hidden(logs)


def test_an_unavailable_esdb_is_reported_without_the_password() -> None:
    with capture_logs() as logs:
        store = connect_events(f"esdb://admin:{TOKEN}@{CLOSED}?Tls=false")
        try:
            hidden(repr(store))
            with pytest.raises(CQRSError) as caught:
                store.head_position()
        finally:
            store.close()
    hidden(caught.value, logs)


@pytest.mark.parametrize("cut", ["/", "?", "#"])
def test_the_esdb_adapter_itself_hides_a_password_cut_by_an_unencoded_character(cut: str) -> None:
    uri = f"esdb://admin:{TOKEN[:4]}{cut}{TOKEN}@{CLOSED}?Tls=false"
    try:
        store = EsdbEventStore(uri)
    except CQRSError as refused:
        shown = str(refused)  # refusing the URI is fine, quoting the password is not
    else:
        shown = repr(store)
        store.close()
    assert TOKEN[:4] not in shown


# -- the command's own log rendering ---------------------------------------------------------------


@pytest.fixture
def cli_logging() -> Iterator[None]:
    """Configure logging as the command does, then restore what was configured before."""
    structlog_config = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    switches = (settings.debug, settings.verbose)
    uris = _common._uris[:]
    try:
        yield
    finally:
        structlog.configure(**structlog_config)
        root.handlers[:] = handlers
        root.setLevel(level)
        settings.debug, settings.verbose = switches
        _common._uris[:] = uris


def _fail_with(payload: dict[str, str]) -> None:
    owner = payload["owner"]  # a local variable holding the secret
    raise RuntimeError(f"a handler failed on an event of {len(owner)} characters")


@pytest.mark.usefixtures("cli_logging")
@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_the_command_logs_an_exception_without_local_variables(
    debug: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(debug=debug)
    log = structlog.get_logger("secrets-test")
    try:
        _fail_with({"owner": TOKEN})
    except RuntimeError:
        log.exception("test.crashed", projection="p")
    err = capsys.readouterr().err
    hidden(err)
    assert "test.crashed" in err
    assert "RuntimeError: a handler failed" in err
    if debug:
        assert "Traceback (most recent call last)" in err
    else:
        assert "Traceback" not in err
        assert len(err.strip().splitlines()) == 1, err


@pytest.mark.usefixtures("cli_logging")
@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_the_command_logs_a_stdlib_exception_without_local_variables(
    debug: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(debug=debug)
    try:
        _fail_with({"owner": TOKEN})
    except RuntimeError:
        logging.getLogger("some.driver").exception("it failed")
    err = capsys.readouterr().err
    hidden(err)
    assert "RuntimeError: a handler failed" in err
    assert ("Traceback (most recent call last)" in err) is debug


@pytest.mark.usefixtures("cli_logging")
def test_the_command_keeps_the_secrets_of_its_uris_out_of_logs_and_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(verbose=2)
    require_uri(f"postgresql://app:{TOKEN}%ZZ@pg/views", "--read-models", "ESCQRS_READ_MODELS")
    # What a driver might say, quoting the password it could not read.
    logging.getLogger("psycopg.pool").warning('invalid percent-encoded token: "%s%%ZZ"', TOKEN)
    structlog.get_logger("x").warning("driver.said", reason=f"token {TOKEN}%ZZ")
    line = error_line(ValueError(f'invalid percent-encoded token: "{TOKEN}%ZZ"'))
    err = capsys.readouterr().err
    hidden(err, line)
    assert "invalid percent-encoded token" in err
    assert line == 'ValueError: invalid percent-encoded token: "***"'


# -- the escqrs command: stdout and stderr, with and without --debug --------------------------------


def one_error_line(result_stderr: str) -> str:
    """The ``error: ...`` line of a failed run, checking it is the only line not a log line."""
    lines = [line for line in result_stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, result_stderr
    return errors[0]


@pytest.mark.parametrize("debug", [[], ["--debug"]], ids=["plain", "debug"])
@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (
            ["streams", "list", "--store", f"esdbx://admin:{TOKEN}@host:2113"],
            "error: Invalid event store URI 'esdbx://admin:***@host:2113': the scheme must be "
            "memory:, sqlite:/// or esdb://.",
        ),
        (
            ["streams", "list", "--store", f"esdb://admin:{TOKEN}@{CLOSED}?Tls=false"],
            "error: EventStoreDB at esdb://127.0.0.1:1 is unavailable",
        ),
        (
            [
                "streams",
                "list",
                "--store",
                f"esdb+discover://admin:{TOKEN}@{CLOSED}?Tls=false&GossipTimeout=1",
            ],
            "error: ",
        ),
        (
            ["streams", "list", "--store", f"esdb://{CLOSED}?Tls=false&Password={TOKEN}"],
            "error: Invalid event store URI 'esdb://127.0.0.1:1': Unknown field in connection query string",
        ),
        (
            ["streams", "list", "--store", f"sqlite:///missing.db?password={TOKEN}"],
            "error: The event store file 'missing.db' does not exist (from --store "
            "sqlite:///missing.db?password=***).",
        ),
        (
            ["projections", "parked", "--read-models", f"postgres+psycopg://app:{TOKEN}@pg/views"],
            "error: Invalid read model store URI 'postgres+psycopg://app:***@pg/views': the scheme must be "
            "memory:, sqlite:/// or postgresql://.",
        ),
        (
            ["projections", "parked", "--read-models", f"postgresql://app:{TOKEN}%ZZ@{CLOSED}/views"],
            "error: Invalid PostgreSQL connection string 'postgresql://app:***@127.0.0.1:1/views': "
            'invalid percent-encoded token: "***".',
        ),
        (
            ["projections", "parked", "--read-models", f"postgresql://app@{CLOSED}/views?Password={TOKEN}"],
            "error: Invalid PostgreSQL connection string 'postgresql://app@127.0.0.1:1/views?Password=***': ",
        ),
    ],
    ids=[
        "unknown-esdbx",
        "esdb-down",
        "esdb-discover-down",
        "esdb-query",
        "sqlite-query",
        "unknown-psycopg",
        "libpq-token",
        "libpq-query",
    ],
)
def test_a_failing_command_shows_no_password(
    args: list[str], shown: str, debug: list[str], tmp_path: Path
) -> None:
    result = escqrs(*debug, *args, cwd=tmp_path, timeout=120)
    hidden(result.stdout, result.stderr)
    assert result.returncode == 1, result.stderr
    assert one_error_line(result.stderr).startswith(shown)
    assert ("Traceback (most recent call last)" in result.stderr) == bool(debug)


def test_a_password_in_the_environment_is_not_shown_either(tmp_path: Path) -> None:
    result = escqrs(
        "--debug", "projections", "parked", env={"ESCQRS_READ_MODELS": f"postgres+psycopg://app:{TOKEN}@pg/v"}
    )
    hidden(result.stdout, result.stderr)
    assert result.returncode == 1


def test_a_working_command_shows_no_password_even_with_debug_logs(
    postgres: str, schema: str, esdb_server: EsdbEndpoint, tmp_path: Path
) -> None:
    store = with_password(esdb_server.uri)
    views = postgres_with_password(postgres, schema)
    for args in (
        ["-vv", "demo", "--store", store, "--read-models", views],
        ["--debug", "streams", "list", "--store", store],
        ["--debug", "projections", "status", "--store", store, "--read-models", views],
        ["--debug", "projections", "run", "--until-caught-up", "--store", store, "--read-models", views],
    ):
        result = escqrs(*args, cwd=tmp_path, timeout=180)
        hidden(result.stdout, result.stderr)
        assert result.returncode == 0, result.stderr
    assert "admin:***@" in escqrs("demo", "--store", store, "--read-models", views, cwd=tmp_path).stdout


# -- a runner that crashes on an event whose payload holds a secret ---------------------------------


@pytest.fixture
def secret_payload(tmp_path: Path) -> str:
    """An SQLite event store holding one account opened for the secret (its payload)."""
    uri = f"sqlite:///{tmp_path / 'events.db'}"
    store = connect_events(uri)
    try:
        data = json.dumps({"account_id": "a-1", "owner": TOKEN}).encode()
        store.append(
            "Account-a-1", [NewEvent(type="AccountOpened", data=data)], expected_version=StreamState.NO_STREAM
        )
    finally:
        store.close()
    return uri


@pytest.mark.parametrize("debug", [[], ["--debug"]], ids=["plain", "debug"])
@pytest.mark.parametrize("mode", [[], ["--until-caught-up"]], ids=["in-threads", "until-caught-up"])
def test_a_crashing_runner_shows_neither_the_payload_nor_local_variables(
    secret_payload: str, tmp_path: Path, debug: list[str], mode: list[str]
) -> None:
    views = f"sqlite:///{tmp_path / 'views.db'}"
    result = escqrs(
        "projections", "run", *mode, *debug,
        "--store", secret_payload, "--read-models", views, "--app", "cli._secret_app:app",
    )  # fmt: skip
    hidden(result.stdout, result.stderr)
    assert result.returncode == 1, result.stderr
    error = one_error_line(result.stderr)
    assert f"Projection {FAILING!r} stopped" in error
    assert "the failing projection fails on purpose" in error
    if debug:
        assert "Traceback (most recent call last)" in result.stderr
    else:
        # Log lines (one each), the progress message and the error: no traceback, no locals.
        assert "Traceback" not in result.stderr
        for line in result.stderr.splitlines():
            assert LOG_LINE.match(line) or line.startswith(("Running ", "Catching up ", "error: ")), line
    # The payload stayed where it was (the handler did see it).
    with sqlite3.connect(tmp_path / "events.db") as db:
        assert TOKEN in db.execute("SELECT CAST(data AS TEXT) FROM events").fetchone()[0]
