"""The bank as the ``escqrs`` command sees it: ``escqrs --app escqrs.examples.bank.app:bank ...``.

It names the bank's event registry, its one aggregate (``Account``, stream category
``Account``) and its projections (:mod:`escqrs.examples.bank.read_models`), and gives ``escqrs demo``
the bank's demo.
"""

from __future__ import annotations

from escqrs import AggregateSpec, AppSpec
from escqrs.examples.bank import demo
from escqrs.examples.bank.account import Account
from escqrs.examples.bank.events import registry
from escqrs.examples.bank.read_models import AccountDetail, AccountList, DailyTransactions

__all__ = ["bank"]

#: The bank application spec (the ``escqrs`` default).
bank = AppSpec(
    name="bank",
    description="A small bank: open an account, deposit, withdraw (never below zero), close.",
    registry=registry,
    aggregates=(AggregateSpec(Account, registry, snapshot_every=100),),
    projections=(AccountList, AccountDetail, DailyTransactions),
    demo=demo.run,
)
