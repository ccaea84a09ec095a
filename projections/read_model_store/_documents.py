"""Documents as JSON, and the portable meaning of ``where`` and ``order_by`` in Python.

Every document is checked against the port's one rule for text (see the port's module
docstring) when a unit of work is given it (``put``/``update``), before it is buffered, so a
document no store can hold fails the handler that wrote it, never the batch's commit.

The memory adapter evaluates queries with :func:`matches` and :func:`sort_documents`; the SQL
adapters translate the same rules to SQL, and the contract suite checks that they agree.
"""

from __future__ import annotations

import contextlib
import json
import math
import uuid
from collections.abc import Mapping
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from eventsourcing_cqrs.errors import InvalidInputError
from projections.read_model_store._names import validate_field_name
from projections.read_model_store.port import Document, WhereValue

__all__ = [
    "check_text",
    "copy_document",
    "decode_document",
    "encode_document",
    "encode_normalized",
    "matches",
    "merge_changes",
    "normalize_document",
    "sort_documents",
    "validate_key",
    "validate_limit",
    "validate_offset",
    "validate_where",
]


def _default(value: object) -> object:
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# -- the one rule for text ----------------------------------------------------------------
#
# PostgreSQL's JSONB refuses ``\u0000`` and lone surrogates, and neither can be written as
# UTF-8 (SQLite's text): every store refuses them alike, field names and keys included.


def _text_problem(text: str) -> str | None:
    """Why no store can hold ``text``, or ``None``."""
    if "\x00" in text:
        return "holds a NUL character (\\x00), which no read model store can store"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "holds a lone surrogate, which is not valid Unicode text and no read model store can store"
    return None


def _value_problem(value: object, path: str) -> tuple[str, str] | None:
    """The path and problem of the first text inside ``value`` (in normal form) that breaks the rule."""
    if isinstance(value, str):
        problem = _text_problem(value)
        return None if problem is None else (path, problem)
    if isinstance(value, dict):
        for name, item in value.items():
            inner = f"{path}.{name}"
            problem = _text_problem(str(name))
            if problem is not None:
                return inner, "has a name that " + problem
            found = _value_problem(item, inner)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _value_problem(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def check_text(table: str, key: str, fields: Mapping[str, Any], what: str = "document") -> None:
    """Raise :class:`InvalidInputError` naming ``table``, ``key`` and the field's path if a string
    or a field name in ``fields`` (a document in normal form, or its changed fields) holds a NUL
    character or a lone surrogate."""
    for name, value in fields.items():
        problem = _text_problem(name)
        if problem is not None:
            _refuse(f"{what} for key {key!r} in table {table!r}", fields, name, "has a name that " + problem)
        if isinstance(value, str | dict | list):
            found = _value_problem(value, name)
            if found is not None:
                _refuse(f"{what} for key {key!r} in table {table!r}", fields, *found)


def _refuse(subject: str, fields: object, path: str, problem: str) -> None:
    raise InvalidInputError(subject, fields, f"field {path!r} {problem}")


def encode_document(table: str, key: str, document: Mapping[str, Any]) -> str:
    """``document`` as JSON text; Decimal, UUID and dates become strings."""
    if not isinstance(document, Mapping):
        raise InvalidInputError(
            f"document for key {key!r} in table {table!r}", document, "a document must be a mapping"
        )
    try:
        return json.dumps(dict(document), default=_default, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"document for key {key!r} in table {table!r}", document, str(exc)) from exc


def decode_document(text: str | bytes) -> Document:
    """Inverse of :func:`encode_document`."""
    value: Document = json.loads(text)
    return value


# -- documents kept decoded -----------------------------------------------------------------
#
# A unit of work keeps the documents it buffers as dicts in *normal form*: what
# ``decode_document(encode_document(...))`` would return, built without the JSON round trip
# for the usual top-level values. It encodes each buffered document once, when it writes it.

_ENCODER = json.JSONEncoder(default=_default, separators=(",", ":"), allow_nan=False)
_NORMAL_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_AS_IS = frozenset({str, int, bool, type(None)})
_AS_TEXT: dict[type, Any] = {
    Decimal: str,
    uuid.UUID: str,
    datetime: datetime.isoformat,
    date: date.isoformat,
    time: time.isoformat,
}
_CONTAINERS = frozenset({dict, list})
_isfinite = math.isfinite


class _NeedsRoundTrip(Exception):  # noqa: N818 - a signal inside this module, never raised out
    """A value the fast path does not handle: take the full JSON round trip instead."""


def _normal_value(value: object, kind: type) -> object:
    """``value`` (not of an ``_AS_IS`` type) as ``json.loads(json.dumps(value))`` with the
    document hook would return it."""
    as_text = _AS_TEXT.get(kind)
    if as_text is not None:
        return as_text(value)
    if kind is float:
        if _isfinite(value):  # type: ignore[arg-type]
            return value
        raise _NeedsRoundTrip
    try:
        return json.loads(_ENCODER.encode(value))
    except (TypeError, ValueError) as exc:
        raise _NeedsRoundTrip from exc


def _normal_fields(fields: Mapping[str, Any], into: dict[str, Any] | None = None) -> dict[str, Any]:
    """``fields`` in normal form, set into ``into`` (a new dict by default)."""
    normal: dict[str, Any] = {} if into is None else into
    for name, value in fields.items():
        if type(name) is not str:
            # JSON turns other keys into strings, which may then collide: let JSON decide.
            raise _NeedsRoundTrip
        kind = type(value)
        normal[name] = value if kind in _AS_IS else _normal_value(value, kind)
    return normal


def normalize_document(table: str, key: str, document: Mapping[str, Any]) -> Document:
    """``decode_document(encode_document(table, key, document))``, cheaply; a new dict."""
    normal: Document | None = None
    if type(document) is dict or isinstance(document, Mapping):
        with contextlib.suppress(_NeedsRoundTrip):
            normal = _normal_fields(document)
    if normal is None:
        normal = decode_document(encode_document(table, key, document))
    check_text(table, key, normal)
    return normal


def merge_changes(table: str, key: str, current: Document, changes: Mapping[str, Any]) -> Document:
    """The normal form of ``{**current, **changes}``, ``current`` being in normal form; a new dict."""
    # Once per projected event (``update`` of a balance, a counter): the usual changes, a dict
    # of a few ASCII-named scalars or decimals, are normalised and checked in one loop here.
    # Anything else, and any text that is not plain ASCII or holds a NUL, takes the general
    # path below, which decides (and words the error) exactly as before.
    if type(changes) is dict:
        merged = current.copy()
        for name, value in changes.items():
            if type(name) is not str or not name.isascii() or "\x00" in name:
                break
            kind = type(value)
            if kind is str:
                if not value.isascii() or "\x00" in value:
                    break
                merged[name] = value
            elif kind is Decimal:
                merged[name] = str(value)  # ASCII digits, sign, point and exponent only
            elif kind in _AS_IS:
                merged[name] = value
            else:
                break
        else:
            return merged
    return _merge_changes_checked(table, key, current, changes)


def _merge_changes_checked(table: str, key: str, current: Document, changes: Mapping[str, Any]) -> Document:
    """:func:`merge_changes` for any changes: normalised field by field, or by a JSON round trip."""
    if type(changes) is not dict and not isinstance(changes, Mapping):
        raise InvalidInputError(
            f"changes for key {key!r} in table {table!r}", changes, "changes must be a mapping of fields"
        )
    try:
        changed = _normal_fields(changes)
    except _NeedsRoundTrip:
        changed = decode_document(encode_document(table, key, {**current, **changes}))
    check_text(table, key, changed, "changes")
    merged = current.copy()
    merged.update(changed)
    return merged


def copy_document(document: Document) -> Document:
    """A copy of a document in normal form that shares nothing mutable with it."""
    copy = document.copy()
    if _CONTAINERS.isdisjoint(map(type, copy.values())):
        return copy
    return decode_document(_NORMAL_ENCODER.encode(document))


def encode_normalized(document: Document) -> str:
    """A document in normal form as the JSON text :func:`encode_document` gives for it."""
    return _NORMAL_ENCODER.encode(document)


def validate_key(key: object) -> str:
    """Return ``key`` if it is a non-empty string."""
    if not isinstance(key, str) or not key:
        raise InvalidInputError("document key", key, "a key must be a non-empty string")
    problem = _text_problem(key)
    if problem is not None:
        raise InvalidInputError("document key", key, f"the key {problem}")
    return key


def validate_offset(offset: object) -> int:
    """Return ``offset`` if it is a non-negative integer."""
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidInputError("offset", offset, "an offset must be a non-negative integer")
    return offset


def validate_limit(limit: object) -> int | None:
    """Return ``limit`` if it is ``None`` or a non-negative integer."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InvalidInputError("limit", limit, "a limit must be a non-negative integer")
    return limit


def validate_where(where: Mapping[str, WhereValue] | None) -> list[tuple[str, WhereValue]]:
    """``where`` as checked ``(field, value)`` pairs; values must be JSON scalars."""
    if where is None:
        return []
    if not isinstance(where, Mapping):
        raise InvalidInputError("where", where, "give a mapping of field names to values")
    pairs: list[tuple[str, WhereValue]] = []
    for field_name, value in where.items():
        validate_field_name(field_name)
        if isinstance(value, float) and math.isnan(value):
            raise InvalidInputError(f"where value for {field_name!r}", value, "NaN cannot be compared")
        if value is not None and not isinstance(value, str | int | float | bool):
            raise InvalidInputError(
                f"where value for {field_name!r}", value, "compare with a string, number, boolean or None"
            )
        problem = _text_problem(value) if isinstance(value, str) else None
        if problem is not None:
            raise InvalidInputError(f"where value for {field_name!r}", value, f"the value {problem}")
        pairs.append((field_name, value))
    return pairs


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equal(actual: object, wanted: WhereValue) -> bool:
    if wanted is None:
        return actual is None
    if isinstance(wanted, bool):
        return isinstance(actual, bool) and actual == wanted
    if _is_number(wanted):
        return _is_number(actual) and actual == wanted
    return isinstance(actual, str) and actual == wanted


def matches(document: Document, where: list[tuple[str, WhereValue]]) -> bool:
    """Whether ``document`` satisfies every ``(field, value)`` pair."""
    return all(_equal(document.get(field_name), value) for field_name, value in where)


def _rank(value: object) -> tuple[int, Any]:
    # Mirrors SQLite: NULL < numbers (booleans are 0/1) < text < JSON containers.
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (1, int(value))
    if _is_number(value):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    return (3, json.dumps(value, sort_keys=True))


def sort_documents(
    items: list[tuple[str, Document]], order_by: str | None, descending: bool
) -> list[tuple[str, Document]]:
    """``(key, document)`` pairs by ``order_by`` (then key, always ascending)."""
    ordered = sorted(items, key=lambda item: item[0])
    if order_by is None:
        return ordered
    return sorted(ordered, key=lambda item: _rank(item[1].get(order_by)), reverse=descending)
