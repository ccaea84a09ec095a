"""The only place SQL identifiers are made: from names checked against a strict pattern.

A projection name, a table name and a generation number make one physical table name,
``rm_{projection}__g{generation}__{table}``; the double underscore cannot occur inside a
name, so two different triples never share a table. PostgreSQL truncates identifiers at 63
bytes, so the names are bounded to keep every physical name below that on every adapter.
"""

from __future__ import annotations

import hashlib
import re

from projections.errors import InvalidNameError

__all__ = [
    "MAX_IDENTIFIER_LENGTH",
    "MAX_PROJECTION_NAME_LENGTH",
    "MAX_TABLE_NAME_LENGTH",
    "index_name",
    "physical_table_name",
    "quote",
    "validate_field_name",
    "validate_projection_name",
    "validate_schema_name",
    "validate_table_name",
]

MAX_IDENTIFIER_LENGTH = 63
MAX_PROJECTION_NAME_LENGTH = 30
MAX_TABLE_NAME_LENGTH = 20
_NAME = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAME_RULE = "use lowercase letters, digits and single underscores, starting with a letter"


def _validate(kind: str, name: object, max_length: int) -> str:
    if not isinstance(name, str):
        raise InvalidNameError(kind, name, "a name must be a string")
    if not _NAME.fullmatch(name):
        raise InvalidNameError(kind, name, _NAME_RULE)
    if len(name) > max_length:
        raise InvalidNameError(kind, name, f"at most {max_length} characters")
    return name


def validate_projection_name(name: object) -> str:
    """Return ``name`` if it can name a projection, else raise :class:`InvalidNameError`."""
    return _validate("projection name", name, MAX_PROJECTION_NAME_LENGTH)


def validate_table_name(name: object) -> str:
    """Return ``name`` if it can name a document table, else raise :class:`InvalidNameError`."""
    return _validate("table name", name, MAX_TABLE_NAME_LENGTH)


def validate_schema_name(name: object) -> str:
    """Return ``name`` if it can name a PostgreSQL schema, else raise :class:`InvalidNameError`."""
    return _validate("schema name", name, MAX_IDENTIFIER_LENGTH)


def validate_field_name(name: object) -> str:
    """Return ``name`` if it can name a document field in ``where``/``order_by``/indexes."""
    if not isinstance(name, str) or not _FIELD.fullmatch(name):
        raise InvalidNameError(
            "field name", name, "use letters, digits and underscores, not starting with a digit"
        )
    if len(name) > MAX_IDENTIFIER_LENGTH:
        raise InvalidNameError("field name", name, f"at most {MAX_IDENTIFIER_LENGTH} characters")
    return name


def physical_table_name(projection: str, generation: int, table: str) -> str:
    """The unquoted SQL name of one generation's table."""
    name = f"rm_{validate_projection_name(projection)}__g{int(generation)}__{validate_table_name(table)}"
    if len(name) > MAX_IDENTIFIER_LENGTH:
        raise InvalidNameError(
            "table name", name, f"projection, generation and table make more than {MAX_IDENTIFIER_LENGTH}"
        )
    return name


def index_name(table: str, field_name: str) -> str:
    """A short, unique, deterministic name for the index of ``field_name`` on ``table``."""
    digest = hashlib.blake2b(f"{table}.{field_name}".encode(), digest_size=8).hexdigest()
    return f"rm_ix_{digest}"


def quote(identifier: str) -> str:
    """Double-quote an identifier that was built from validated names."""
    if '"' in identifier or "\x00" in identifier:
        raise InvalidNameError("identifier", identifier, "must not contain quotes")
    return f'"{identifier}"'
