"""Money transfers between accounts: a process manager, and a reactor for good measure.

A transfer is a saga over two ``Account`` aggregates, neither of which may change the other:

1. ``TransferMoney`` is handled by the source account, which records ``TransferRequested``;
2. :class:`TransferProcess` starts an instance (stream ``Transfer-{transfer_id}``), sends
   ``Withdraw`` to the source and schedules a ``timeout``;
3. when the source's ``MoneyWithdrawn`` arrives, it sends ``Deposit`` to the target;
4. when the target's ``MoneyDeposited`` arrives, the transfer is completed;
5. if the source refuses the withdrawal (insufficient funds, closed), the transfer failed and
   nothing moved; if the target refuses the deposit (closed), it **compensates** by depositing
   the money back into the source, then the transfer is compensated;
6. if the transfer is not done when ``timeout`` passes, it is marked timed out and takes no new
   step: a withdrawal that arrives after that is refunded instead of credited;
7. if the refund is refused too (the source was emptied by the withdrawal, then closed), the
   transfer finishes ``refund refused``: the money is held by the bank, on record in the
   transfer's stream, for a person to settle.

Every step is an event of the transfer's stream, so ``escqrs audit history Transfer-t1`` shows
what was decided and why, and ``escqrs audit trace`` follows the chain from the request to the
last deposit.

:class:`WelcomeBonus` is a stateless reactor: every new account receives a bonus deposit, once,
however often its ``AccountOpened`` is delivered.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import ClassVar, assert_never

from escqrs.examples.bank.commands import Deposit, Withdraw
from escqrs.examples.bank.events import (
    AccountOpened,
    MoneyDeposited,
    MoneyWithdrawn,
    TransferRequested,
    registry,
)
from eventsourcing_cqrs import DomainEvent, EventRegistry
from eventsourcing_cqrs.reactions import (
    CommandRefusal,
    Deadline,
    Process,
    ProcessManager,
    ReactionContext,
    Reactor,
    process_events,
)

__all__ = [
    "Transfer",
    "TransferCompensated",
    "TransferCompensating",
    "TransferCompleted",
    "TransferCredited",
    "TransferDebited",
    "TransferEvent",
    "TransferFailed",
    "TransferProcess",
    "TransferRefundRefused",
    "TransferStarted",
    "TransferTimedOut",
    "WelcomeBonus",
    "bank_registry",
    "transfer_registry",
]


class TransferStarted(DomainEvent):
    """A transfer of ``amount`` from ``source`` to ``target`` began; the withdrawal is sent."""

    event_type: ClassVar[str] = "TransferStarted"

    transfer_id: str
    source: str
    target: str
    amount: Decimal


class TransferDebited(DomainEvent):
    """The source paid the amount out; the deposit into the target is sent."""

    event_type: ClassVar[str] = "TransferDebited"

    transfer_id: str


class TransferCredited(DomainEvent):
    """The target received the amount."""

    event_type: ClassVar[str] = "TransferCredited"

    transfer_id: str


class TransferCompleted(DomainEvent):
    """The money moved from the source to the target."""

    event_type: ClassVar[str] = "TransferCompleted"

    transfer_id: str


class TransferFailed(DomainEvent):
    """The source refused the withdrawal: nothing moved."""

    event_type: ClassVar[str] = "TransferFailed"

    transfer_id: str
    reason: str


class TransferCompensating(DomainEvent):
    """The money left the source but will not reach the target: it is paid back."""

    event_type: ClassVar[str] = "TransferCompensating"

    transfer_id: str
    reason: str


class TransferCompensated(DomainEvent):
    """The source got its money back."""

    event_type: ClassVar[str] = "TransferCompensated"

    transfer_id: str


class TransferRefundRefused(DomainEvent):
    """The source refused its refund (it was closed meanwhile): the bank holds the money."""

    event_type: ClassVar[str] = "TransferRefundRefused"

    transfer_id: str
    reason: str


class TransferTimedOut(DomainEvent):
    """The transfer was not done in time; it takes no new step."""

    event_type: ClassVar[str] = "TransferTimedOut"

    transfer_id: str


TransferEvent = (
    TransferStarted
    | TransferDebited
    | TransferCredited
    | TransferCompleted
    | TransferFailed
    | TransferCompensating
    | TransferCompensated
    | TransferRefundRefused
    | TransferTimedOut
)

#: Decodes the ``Transfer-{id}`` streams: the transfer's events and the process bookkeeping.
transfer_registry = EventRegistry(
    [
        TransferStarted,
        TransferDebited,
        TransferCredited,
        TransferCompleted,
        TransferFailed,
        TransferCompensating,
        TransferCompensated,
        TransferRefundRefused,
        TransferTimedOut,
        *process_events,
    ]
)


def _bank_and_transfers() -> EventRegistry:
    both = EventRegistry()
    both.include(registry)
    both.include(transfer_registry)
    return both


#: Decodes the bank's events and the transfers' streams (the application's registry).
bank_registry = _bank_and_transfers()


class Transfer(Process[TransferEvent]):
    """One transfer's state: where the money is."""

    category: ClassVar[str] = "Transfer"

    def __init__(self, transfer_id: str) -> None:
        super().__init__(transfer_id)
        self.source = ""
        self.target = ""
        self.amount = Decimal(0)
        #: debiting → crediting → completed; or failed; or compensating → compensated (or
        #: refund_refused).
        self.status = "new"
        self.timed_out = False
        self.reason: str | None = None

    def evolve(self, event: TransferEvent) -> None:
        match event:
            case TransferStarted(source=source, target=target, amount=amount):
                self.source, self.target, self.amount = source, target, amount
                self.status = "debiting"
            case TransferDebited():
                self.status = "crediting"
            case TransferCredited():
                self.status = "credited"
            case TransferCompleted():
                self.status = "completed"
            case TransferFailed(reason=reason):
                self.status, self.reason = "failed", reason
            case TransferCompensating(reason=reason):
                self.status, self.reason = "compensating", reason
            case TransferCompensated():
                self.status = "compensated"
            case TransferRefundRefused(reason=reason):
                self.status, self.reason = "refund_refused", reason
            case TransferTimedOut():
                self.timed_out = True
            case _:
                assert_never(event)


class TransferProcess(ProcessManager[Transfer]):
    """Moves money between two accounts, refunding the source if the target refuses."""

    name = "transfers"
    process = Transfer
    commands = (Withdraw, Deposit)
    registry = bank_registry
    #: How long a transfer may take before it is given up.
    timeout: ClassVar[timedelta] = timedelta(minutes=5)

    def __init__(self) -> None:
        super().__init__()
        self.start(TransferRequested, key=lambda e: e.transfer_id, handler=self.requested)
        self.on(MoneyWithdrawn, key=lambda e: e.transfer_id, handler=self.withdrawn)
        self.on(MoneyDeposited, key=lambda e: e.transfer_id, handler=self.deposited)
        self.on_refused(Withdraw, self.withdrawal_refused)
        self.on_refused(Deposit, self.deposit_refused)
        self.on_deadline("timeout", self.timed_out)

    def requested(self, event: TransferRequested, transfer: Transfer) -> None:
        """Start: take the money from the source, and give the whole transfer a deadline."""
        if transfer.status != "new":
            return
        transfer.apply(
            TransferStarted(
                transfer_id=event.transfer_id,
                source=event.account_id,
                target=event.target,
                amount=event.amount,
            )
        )
        transfer.send(Withdraw(account_id=event.account_id, amount=event.amount, transfer_id=transfer.id))
        transfer.schedule("timeout", after=self.timeout)

    def withdrawn(self, event: MoneyWithdrawn, transfer: Transfer) -> None:
        """The source paid out: pay the target, or, once timed out, pay the source back."""
        if transfer.status != "debiting" or event.account_id != transfer.source:
            return
        transfer.apply(TransferDebited(transfer_id=transfer.id))
        if transfer.timed_out:
            self._refund(transfer, "the transfer timed out")
        else:
            transfer.send(
                Deposit(account_id=transfer.target, amount=transfer.amount, transfer_id=transfer.id)
            )

    def deposited(self, event: MoneyDeposited, transfer: Transfer) -> None:
        """The target was paid (done), or the source was refunded (compensated)."""
        if transfer.status == "crediting" and event.account_id == transfer.target:
            transfer.apply(TransferCredited(transfer_id=transfer.id))
            transfer.apply(TransferCompleted(transfer_id=transfer.id))
            transfer.finish("completed")
        elif transfer.status == "compensating" and event.account_id == transfer.source:
            transfer.apply(TransferCompensated(transfer_id=transfer.id))
            transfer.finish("compensated")

    def withdrawal_refused(self, refusal: CommandRefusal, transfer: Transfer) -> None:
        """The source refused: nothing moved, the transfer failed."""
        if transfer.status == "debiting":
            transfer.apply(TransferFailed(transfer_id=transfer.id, reason=refusal.reason))
            transfer.finish("failed")

    def deposit_refused(self, refusal: CommandRefusal, transfer: Transfer) -> None:
        """The target refused: compensate by paying the source back. The refund refused: stop."""
        if transfer.status == "crediting":
            self._refund(transfer, refusal.reason)
        elif transfer.status == "compensating":
            transfer.apply(TransferRefundRefused(transfer_id=transfer.id, reason=refusal.reason))
            transfer.finish("refund refused")

    def timed_out(self, deadline: Deadline, transfer: Transfer) -> None:
        """Out of time: take no new step (a withdrawal still arriving is refunded)."""
        del deadline
        transfer.apply(TransferTimedOut(transfer_id=transfer.id))

    def _refund(self, transfer: Transfer, reason: str) -> None:
        transfer.apply(TransferCompensating(transfer_id=transfer.id, reason=reason))
        transfer.send(Deposit(account_id=transfer.source, amount=transfer.amount, transfer_id=transfer.id))


class WelcomeBonus(Reactor):
    """Every new account receives :attr:`bonus`, once."""

    name = "welcome_bonus"
    bonus: ClassVar[Decimal] = Decimal("5.00")

    def __init__(self) -> None:
        super().__init__()
        self.on(AccountOpened, self.opened)

    def opened(self, event: AccountOpened, context: ReactionContext) -> Deposit:
        """Pay the bonus into the new account."""
        del context
        return Deposit(account_id=event.account_id, amount=self.bonus)
