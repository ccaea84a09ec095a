"""The one parser of ``sqlite:`` store URIs, shared by the event store, the read model store and the CLI.

It is private to the framework (the shared kernel of both sides): the write side's
:func:`eventsourcing_cqrs.event_store.connect`, the read side's
:func:`projections.read_model_store.connect` and the ``escqrs`` command line all read a
``sqlite:`` URI through :func:`parse_sqlite_uri`, so they accept the same forms and refuse the
same mistakes with the same messages:

* ``sqlite:///relative/path.db`` and ``sqlite:////absolute/path.db``;
* ``?durable=true|false`` (also ``1|0``, ``yes|no``, ``on|off``, in any case), default true.

Other query options are returned to the caller, which knows whether it takes any.

It also holds the one redaction of store URIs, :func:`redact_uri`, used wherever a URI goes into
an error message, a ``repr`` or a log, and :func:`redact_text`, which takes the same secrets out
of a text (a driver's message) that may quote them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, unquote_plus, urlsplit

from eventsourcing_cqrs.errors import InvalidInputError

__all__ = ["MASK", "SQLiteURI", "parse_sqlite_uri", "redact_text", "redact_uri", "refuse_ambiguous_userinfo"]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True, slots=True)
class SQLiteURI:
    """A parsed ``sqlite:`` URI: the database path, whether it is durable, and the other options.

    ``uri`` and ``what`` (e.g. ``"event store URI"``) are kept to name the URI in errors.
    """

    path: str
    durable: bool
    options: Mapping[str, str]
    uri: str
    what: str

    @property
    def file(self) -> Path:
        """The database file (relative to the working directory unless the URI had ``////``)."""
        return Path(self.path)

    @property
    def exists(self) -> bool:
        """Whether the database file exists already (opening it would otherwise create it)."""
        return self.file.exists()

    def refuse_other_options(self) -> None:
        """Raise :class:`InvalidInputError` if the URI has options besides ``durable``."""
        if self.options:
            raise InvalidInputError(
                self.what, redact_uri(self.uri), f"unknown options {sorted(self.options)}"
            )


def parse_sqlite_uri(uri: str, *, what: str = "event store URI", example: str = "events.db") -> SQLiteURI:
    """Parse ``uri``, a ``sqlite:`` URI, for the store that ``what`` names.

    Raises :class:`InvalidInputError` naming ``what`` when the URI has no path (the message
    suggests ``sqlite:///{example}``), or naming the ``durable option`` when that is not a
    boolean word. Option names are kept as given; the ``durable`` value is read in any case.
    """
    if not isinstance(uri, str) or uri.split(":", 1)[0].lower() != "sqlite":
        shown = redact_uri(uri) if isinstance(uri, str) else uri
        raise InvalidInputError(what, shown, f"a sqlite URI starts with sqlite:, e.g. sqlite:///{example}")
    try:
        parts = urlsplit(uri)
    except ValueError as exc:  # e.g. an unclosed "[" in the host part
        raise InvalidInputError(what, redact_uri(uri), f"it is not a valid URI ({exc})") from None
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path:
        raise InvalidInputError(what, redact_uri(uri), f"a sqlite URI needs a path: sqlite:///{example}")
    options = dict(parse_qsl(parts.query))
    durable = options.pop("durable", "true").lower()
    if durable not in _TRUE | _FALSE:
        raise InvalidInputError("durable option", durable, "use true or false")
    return SQLiteURI(path=path, durable=durable in _TRUE, options=options, uri=uri, what=what)


# -- redaction ---------------------------------------------------------------------------------

#: What stands for a secret in a redacted URI or text.
MASK = "***"

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
#: ``key=value`` pairs of a libpq keyword/value connection string (a value may be quoted).
_KEYWORD_VALUE = re.compile(r"(?P<key>[A-Za-z_][\w.\-]*)(?P<eq>\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'?|[^\s']*)")
_SECRET_WORDS = ("password", "passwd", "pwd", "secret", "token", "apikey", "credential")


def _is_secret_key(key: str) -> bool:
    """Whether a query parameter or keyword called ``key`` holds a secret (libpq's ``password``
    and ``sslpassword``, ``pass``, anything naming a password, secret, token or credential)."""
    name = unquote_plus(key).strip().lower().replace("_", "").replace("-", "")
    return name == "pass" or any(word in name for word in _SECRET_WORDS)


@dataclass(frozen=True, slots=True)
class _Redaction:
    shown: str
    secrets: frozenset[str]


def _variants(value: str) -> set[str]:
    return {value, unquote(value), unquote_plus(value)} - {""}


def _redact_schemeless(text: str) -> _Redaction:
    """A string that is not a URI: maybe a path, maybe a libpq ``key=value`` string."""
    secrets: set[str] = set()

    def mask(match: re.Match[str]) -> str:
        if not _is_secret_key(match["key"]):
            return match[0]
        value = match["value"]
        secrets.update(_variants(value), _variants(value.strip("'")))
        return f"{match['key']}{match['eq']}{MASK}"

    shown = _KEYWORD_VALUE.sub(mask, text)
    if "@" in shown:  # ``user:password@host`` without a scheme
        before, _, after = shown.rpartition("@")
        secrets.update(_variants(before))
        shown = f"{MASK}@{after}"
    return _Redaction(shown, frozenset(secrets))


def _redact(uri: object) -> _Redaction:
    if not isinstance(uri, str):
        return _Redaction(f"<{type(uri).__name__}>", frozenset())
    match = _SCHEME.match(uri)
    if match is None:
        return _redact_schemeless(uri)
    scheme = match[1]
    rest = uri[match.end() :]
    in_doubt = _Redaction(f"{scheme}:{MASK}", frozenset(_variants(rest)))
    try:
        parts = urlsplit(uri)
    except ValueError:
        return in_doubt
    netloc, path, query, fragment = parts.netloc, parts.path, parts.query, parts.fragment
    # An "@" after the authority: a password with an unencoded "/", "?" or "#" was cut in two.
    path_is_a_file = not netloc and path.startswith("/")
    if ("@" in path and not path_is_a_file) or "@" in query or "@" in fragment:
        return in_doubt
    secrets: set[str] = set()
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        user, colon, password = userinfo.partition(":")
        if colon:
            secrets.update(_variants(password))
            netloc = f"{user}:{MASK}@{hosts}"
    pieces = []
    for piece in query.split("&") if query else ():
        key, eq, value = piece.partition("=")
        if eq and _is_secret_key(key):
            secrets.update(_variants(value))
            piece = f"{key}={MASK}"  # noqa: PLW2901 - the piece, redacted
        pieces.append(piece)
    shown = f"{scheme}:" + (f"//{netloc}" if rest.startswith("//") else "") + path
    if pieces:
        shown += "?" + "&".join(pieces)
    if fragment:
        secrets.update(_variants(fragment))
        shown += "#" + MASK
    return _Redaction(shown, frozenset(secrets))


def redact_uri(uri: object) -> str:
    """``uri`` fit to print: every password in it replaced by ``***``.

    * the password of the userinfo (``esdb://admin:***@host``, ``postgresql://app:***@pg/db``);
    * the value of every query parameter naming a secret, in any case and encoding:
      ``password``, ``sslpassword``, ``pass``, and any name containing ``password``, ``passwd``,
      ``pwd``, ``secret``, ``token``, ``apikey`` or ``credential`` (``?Password=***``);
    * the fragment, if any (``#***``): no store URI has one;
    * in a string that is not a URI, the values of such ``key=value`` pairs (a libpq keyword
      string) and everything before an ``@``.

    When the URI cannot be read with certainty (it does not parse, or an ``@`` comes after its
    authority, as when a password holds an unencoded ``/``, ``?`` or ``#``), only its scheme is
    kept: ``esdbx:***``. A value that is not a string is shown as its type, ``<bytes>``.
    """
    return _redact(uri).shown


def redact_text(text: str, *uris: object) -> str:
    """``text`` (a driver's message, say) with every secret that :func:`redact_uri` hides in
    ``uris`` replaced by ``***``, wherever the text quotes it (raw or percent-decoded)."""
    secrets: set[str] = set()
    for uri in uris:
        secrets.update(_redact(uri).secrets)
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def refuse_ambiguous_userinfo(uri: str, what: str) -> None:
    """Raise :class:`InvalidInputError` if ``uri`` cannot be read with certainty (see
    :func:`redact_uri`): a driver given it might take part of a password for a host, and then
    print it."""
    match = _SCHEME.match(uri)
    if match is not None and _redact(uri).shown == f"{match[1]}:{MASK}":
        raise InvalidInputError(
            what,
            redact_uri(uri),
            "it cannot be read unambiguously: percent-encode '/', '?', '#' and '@' in the password",
        )
