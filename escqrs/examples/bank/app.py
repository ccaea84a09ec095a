"""The bank as the ``escqrs`` command sees it: ``escqrs --app escqrs.examples.bank.app:bank ...``.

It names the bank's event registry, its aggregate (``Account``, stream category ``Account``),
the transfer process's streams (``Transfer``), its projections
(:mod:`escqrs.examples.bank.read_models`), its reactors (:mod:`escqrs.examples.bank.transfers`)
with the command bus they dispatch through, and gives ``escqrs demo`` the bank's demo.
"""

from __future__ import annotations

from escqrs import AggregateSpec, AppSpec
from escqrs.examples.bank import demo
from escqrs.examples.bank.account import Account
from escqrs.examples.bank.events import registry
from escqrs.examples.bank.handlers import bank_bus
from escqrs.examples.bank.read_models import AccountDetail, AccountList, DailyTransactions
from escqrs.examples.bank.transfers import Transfer, TransferProcess, WelcomeBonus, bank_registry

__all__ = ["bank"]

#: The bank application spec (the ``escqrs`` default).
bank = AppSpec(
    name="bank",
    description=(
        "A small bank: open an account, deposit, withdraw (never below zero), close, "
        "and transfer money between accounts (refunded if the target refuses)."
    ),
    registry=bank_registry,
    aggregates=(AggregateSpec(Account, registry, snapshot_every=100), AggregateSpec(Transfer, bank_registry)),
    projections=(AccountList, AccountDetail, DailyTransactions),
    reactors=(TransferProcess, WelcomeBonus),
    command_bus=bank_bus,
    demo=demo.run,
)
