"""A small bank: open an account, deposit, withdraw (never below zero), close.

* :mod:`escqrs.examples.bank.events` — the stored events and their
  :data:`~escqrs.examples.bank.events.registry`;
* :mod:`escqrs.examples.bank.commands` — the commands;
* :mod:`escqrs.examples.bank.account` — the ``Account`` aggregate and its business rules;
* :mod:`escqrs.examples.bank.handlers` — command handlers and :func:`~escqrs.examples.bank.handlers.register`;
* :mod:`escqrs.examples.bank.queries` — queries and their DTOs.
"""
