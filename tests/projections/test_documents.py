"""Documents kept decoded in a unit of work equal what a JSON round trip would give."""

from __future__ import annotations

import enum
import math
import uuid
from collections import OrderedDict
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import pytest

from eventsourcing_cqrs.errors import CQRSError, InvalidInputError
from projections.errors import ProjectionDefinitionError
from projections.read_model_store._documents import (
    copy_document,
    decode_document,
    encode_document,
    encode_normalized,
    merge_changes,
    normalize_document,
)
from projections.read_model_store.port import TableSpec


class Colour(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class Name(enum.StrEnum):
    ADA = "ada"


DOCUMENTS: list[dict[Any, Any]] = [
    {},
    {"s": "text", "i": 12, "big": 10**30, "b": True, "n": None, "f": 1.5, "neg": -0.0},
    {"d": Decimal("12.50"), "u": uuid.UUID(int=7), "dt": datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)},
    {"day": date(2024, 5, 6), "t": time(7, 8, 9), "dnan": Decimal("NaN")},
    {"tuple": (1, (2, 3)), "list": [Decimal(1), {"k": date(2024, 1, 1)}], "nested": {1: "one", None: 2}},
    {"level": Level.HIGH, "name": Name.ADA, "unicode": "é€😀"},
    {1: "int key", "1": "string key wins, it comes last"},
    {"1": "string key first", 1: "int key wins"},
    {True: "bool key", 2.5: "float key"},
]


def _round_trip(document: Any) -> Any:
    return decode_document(encode_document("t", "k", document))


@pytest.mark.parametrize("document", DOCUMENTS)
def test_normal_form_equals_the_json_round_trip(document: dict[Any, Any]) -> None:
    normal = normalize_document("t", "k", document)
    assert normal == _round_trip(document)
    assert list(normal) == list(_round_trip(document))
    assert decode_document(encode_normalized(normal)) == normal
    assert encode_normalized(normal) == encode_document("t", "k", normal)


def test_normal_form_of_any_mapping() -> None:
    document = OrderedDict([("b", Decimal(2)), ("a", 1)])
    assert normalize_document("t", "k", document) == {"b": "2", "a": 1}


@pytest.mark.parametrize("changes", DOCUMENTS)
def test_merged_changes_equal_the_json_round_trip(changes: dict[Any, Any]) -> None:
    current = _round_trip({"owner": "ada", "1": "old", "balance": "0", "tags": ["x"]})
    assert merge_changes("t", "k", current, changes) == _round_trip({**current, **changes})


@pytest.mark.parametrize(
    "bad", [{"x": object()}, {"x": math.nan}, {"x": math.inf}, {"x": [math.inf]}, {"x": Colour.RED}, [1]]
)
def test_what_json_refuses_is_refused_naming_table_and_key(bad: Any) -> None:
    with pytest.raises(InvalidInputError) as raised:
        normalize_document("accounts", "a1", bad)
    assert "accounts" in str(raised.value)
    assert "a1" in str(raised.value)
    if isinstance(bad, dict):
        with pytest.raises(InvalidInputError):
            merge_changes("accounts", "a1", {"owner": "ada"}, bad)


@pytest.mark.parametrize("bad", [[1], [("owner", "bob")], "owner", None])
def test_changes_that_are_not_a_mapping_are_refused_naming_table_and_key(bad: Any) -> None:
    # Once a bare TypeError from ``{**current, **changes}``; now the same error as a bad document.
    with pytest.raises(InvalidInputError) as raised:
        merge_changes("accounts", "a1", {"owner": "ada"}, bad)
    assert "'accounts'" in str(raised.value)
    assert "'a1'" in str(raised.value)
    assert raised.value.value is bad


def test_indexes_given_as_a_string_are_a_definition_error_and_still_a_type_error() -> None:
    with pytest.raises(ProjectionDefinitionError) as raised:
        TableSpec("accounts", indexes="owner")  # type: ignore[arg-type]
    assert isinstance(raised.value, TypeError)
    assert isinstance(raised.value, CQRSError)
    assert "'accounts'" in str(raised.value)
    assert "tuple of field names" in str(raised.value)
    assert str(raised.value).endswith(".")


def test_a_circular_document_is_refused() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(InvalidInputError):
        normalize_document("t", "k", {"loop": loop})


def test_normal_form_shares_nothing_with_the_input() -> None:
    tags = ["x"]
    nested = {"k": tags}
    normal = normalize_document("t", "k", {"tags": tags, "nested": nested})
    tags.append("y")
    assert normal == {"tags": ["x"], "nested": {"k": ["x"]}}


def test_a_copy_shares_nothing_mutable() -> None:
    flat = {"a": 1, "b": "two"}
    copy = copy_document(flat)
    assert copy == flat
    assert copy is not flat
    nested = {"a": [1, {"b": [2]}], "c": {"d": []}}
    deep = copy_document(nested)
    deep["a"][1]["b"].append(3)
    deep["c"]["d"].append(4)
    assert nested == {"a": [1, {"b": [2]}], "c": {"d": []}}
