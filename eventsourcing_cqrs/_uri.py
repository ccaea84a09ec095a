"""The one parser of ``sqlite:`` store URIs, shared by the event store, the read model store and the CLI.

It is private to the framework (the shared kernel of both sides): the write side's
:func:`eventsourcing_cqrs.event_store.connect`, the read side's
:func:`projections.read_model_store.connect` and the ``escqrs`` command line all read a
``sqlite:`` URI through :func:`parse_sqlite_uri`, so they accept the same forms and refuse the
same mistakes with the same messages:

* ``sqlite:///relative/path.db`` and ``sqlite:////absolute/path.db``;
* ``?durable=true|false`` (also ``1|0``, ``yes|no``, ``on|off``, in any case), default true.

Other query options are returned to the caller, which knows whether it takes any.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from eventsourcing_cqrs.errors import InvalidInputError

__all__ = ["SQLiteURI", "parse_sqlite_uri"]

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
            raise InvalidInputError(self.what, self.uri, f"unknown options {sorted(self.options)}")


def parse_sqlite_uri(uri: str, *, what: str = "event store URI", example: str = "events.db") -> SQLiteURI:
    """Parse ``uri``, a ``sqlite:`` URI, for the store that ``what`` names.

    Raises :class:`InvalidInputError` naming ``what`` when the URI has no path (the message
    suggests ``sqlite:///{example}``), or naming the ``durable option`` when that is not a
    boolean word. Option names are kept as given; the ``durable`` value is read in any case.
    """
    if not isinstance(uri, str) or uri.split(":", 1)[0].lower() != "sqlite":
        raise InvalidInputError(what, uri, f"a sqlite URI starts with sqlite:, e.g. sqlite:///{example}")
    try:
        parts = urlsplit(uri)
    except ValueError as exc:  # e.g. an unclosed "[" in the host part
        raise InvalidInputError(what, uri, f"it is not a valid URI ({exc})") from None
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path:
        raise InvalidInputError(what, uri, f"a sqlite URI needs a path: sqlite:///{example}")
    options = dict(parse_qsl(parts.query))
    durable = options.pop("durable", "true").lower()
    if durable not in _TRUE | _FALSE:
        raise InvalidInputError("durable option", durable, "use true or false")
    return SQLiteURI(path=path, durable=durable in _TRUE, options=options, uri=uri, what=what)
