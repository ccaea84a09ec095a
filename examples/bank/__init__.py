"""A small bank: open an account, deposit, withdraw (never below zero), close.

* :mod:`examples.bank.events` — the stored events and their :data:`~examples.bank.events.registry`;
* :mod:`examples.bank.commands` — the commands;
* :mod:`examples.bank.account` — the ``Account`` aggregate and its business rules;
* :mod:`examples.bank.handlers` — command handlers and :func:`~examples.bank.handlers.register`;
* :mod:`examples.bank.queries` — queries and their DTOs.
"""
