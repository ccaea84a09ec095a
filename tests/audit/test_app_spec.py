"""The application spec: finding it by reference, and mapping streams to aggregates."""

from __future__ import annotations

import pytest

from escqrs import AggregateSpec, AppSpec, load_app
from escqrs.examples.bank.account import Account
from escqrs.examples.bank.app import bank
from escqrs.examples.bank.events import registry
from eventsourcing_cqrs.errors import InvalidInputError
from eventsourcing_cqrs.serialization import EventRegistry


def test_load_app_finds_the_spec_named_by_module_and_attribute() -> None:
    assert load_app("escqrs.examples.bank.app:bank") is bank


@pytest.mark.parametrize(
    ("reference", "reason"),
    [
        ("escqrs.examples.bank.app", "package.module:attribute"),
        ("no_such_module_here:app", "cannot be imported"),
        ("escqrs.examples.bank.app:nothing", "has no attribute 'nothing'"),
        ("escqrs.examples.bank.events:registry", "not an eventsourcing_cqrs AppSpec"),
        # A class is callable, but never called: Account() would fail for want of an id.
        (
            "escqrs.examples.bank.account:Account",
            r"escqrs.examples.bank.account:Account is a class \(Account\), not an AppSpec: "
            "point --app at an AppSpec or a function returning one",
        ),
        ("escqrs.app:AppSpec", r"is a class \(AppSpec\)"),
    ],
)
def test_load_app_says_what_is_wrong_with_a_reference(reference: str, reason: str) -> None:
    with pytest.raises(InvalidInputError, match=reason):
        load_app(reference)


def test_a_stream_maps_to_its_aggregate_and_id_by_category() -> None:
    spec, aggregate_id = bank.aggregate_for("Account-ada-7")
    assert (spec.aggregate, aggregate_id) == (Account, "ada-7")
    with pytest.raises(InvalidInputError, match="known categories: Account"):
        bank.aggregate_for("Order-1")
    with pytest.raises(InvalidInputError, match="known categories"):
        bank.aggregate_for("Account")


def test_two_aggregates_may_not_share_a_category() -> None:
    with pytest.raises(InvalidInputError, match="share this category"):
        AppSpec(name="twice", registry=registry, aggregates=(AggregateSpec(Account), AggregateSpec(Account)))


def test_the_state_an_auditor_sees_is_the_public_attributes_or_a_given_function() -> None:
    account = Account("a")
    assert AggregateSpec(Account).state_of(account) == {"owner": "", "balance": 0, "closed": False}
    custom = AggregateSpec(Account, state=lambda a: {"open": not a.closed})
    assert custom.state_of(account) == {"open": True}


def test_an_unknown_projection_name_lists_the_known_ones() -> None:
    spec = AppSpec(name="empty", registry=EventRegistry())
    with pytest.raises(InvalidInputError, match="has projections: none"):
        spec.projection("ledger")
