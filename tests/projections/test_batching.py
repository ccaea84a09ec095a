"""The runner's batching rules, one per test, on a clock the test moves by hand."""

from __future__ import annotations

import pytest

from projections._batching import BatchPolicy


class Clock:
    """Seconds that pass only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


def policy(clock: Clock, size: int = 3, delay: float = 0.5, idle_wait: float = 0.1) -> BatchPolicy:
    return BatchPolicy(size, delay, idle_wait=idle_wait, clock=clock)


def test_with_no_batch_open_the_wait_is_idle_wait_and_an_empty_poll_commits_nothing(clock: Clock) -> None:
    batches = policy(clock)
    assert not batches.open
    assert batches.timeout() == 0.1
    assert not batches.nothing_waiting()
    assert not batches.due()
    assert not batches.open


def test_a_batch_commits_when_it_holds_batch_size_events(clock: Clock) -> None:
    batches = policy(clock, size=3)
    assert not batches.event_added()
    assert not batches.event_added()
    assert batches.events == 2
    assert batches.event_added()


def test_a_batch_size_of_one_commits_every_event(clock: Clock) -> None:
    batches = policy(clock, size=1)
    assert batches.event_added()
    batches.committed()
    assert batches.event_added()


def test_a_batch_commits_batch_delay_after_its_first_event_whichever_comes_first(clock: Clock) -> None:
    batches = policy(clock, size=100, delay=0.5)
    assert not batches.event_added()
    clock.advance(0.3)
    assert not batches.event_added()
    clock.advance(0.19)
    assert not batches.event_added()
    clock.advance(0.01)
    assert batches.event_added()
    assert batches.events == 4


def test_the_delay_runs_from_the_first_event_of_the_batch_not_the_latest(clock: Clock) -> None:
    batches = policy(clock, size=100, delay=0.5)
    batches.event_added()
    for _ in range(4):
        clock.advance(0.1)
        assert not batches.due()
        batches.event_added()
    clock.advance(0.1)
    assert batches.due()


def test_a_batch_delay_of_zero_commits_every_event_at_once(clock: Clock) -> None:
    batches = policy(clock, size=100, delay=0.0)
    assert batches.event_added()
    batches.committed()
    assert batches.checkpoint_seen()


def test_an_uncommitted_checkpoint_opens_a_batch_that_commits_after_batch_delay_without_events(
    clock: Clock,
) -> None:
    batches = policy(clock, size=3, delay=0.5)
    assert not batches.checkpoint_seen()
    assert batches.open
    assert batches.events == 0
    clock.advance(0.2)
    assert not batches.checkpoint_seen()
    clock.advance(0.3)
    assert batches.checkpoint_seen()


def test_checkpoints_do_not_count_towards_batch_size(clock: Clock) -> None:
    batches = policy(clock, size=2, delay=10.0)
    for _ in range(5):
        assert not batches.checkpoint_seen()
    assert not batches.event_added()
    assert batches.event_added()


def test_a_checkpoint_opens_the_batch_timer_for_the_events_after_it(clock: Clock) -> None:
    batches = policy(clock, size=100, delay=0.5)
    batches.checkpoint_seen()
    clock.advance(0.5)
    assert batches.event_added()


def test_an_item_that_adds_nothing_commits_an_open_batch_only_past_its_deadline(clock: Clock) -> None:
    batches = policy(clock, size=100, delay=0.5)
    assert not batches.due()
    batches.event_added()
    clock.advance(0.4)
    assert not batches.due()
    clock.advance(0.1)
    assert batches.due()


def test_while_catching_up_the_wait_is_capped_by_the_batch_deadline_and_idle_wait(clock: Clock) -> None:
    batches = policy(clock, size=100, delay=0.5, idle_wait=0.1)
    batches.event_added()
    assert batches.timeout() == pytest.approx(0.1)
    clock.advance(0.45)
    assert batches.timeout() == pytest.approx(0.05)
    clock.advance(1.0)
    assert batches.timeout() == 0.0


def test_an_empty_poll_commits_an_open_batch_even_before_its_deadline(clock: Clock) -> None:
    batches = policy(clock, size=100, delay=60.0)
    batches.event_added()
    assert batches.nothing_waiting()
    batches.committed()
    batches.checkpoint_seen()
    assert batches.nothing_waiting()


def test_a_caught_up_marker_always_commits_and_makes_the_policy_live_for_good(clock: Clock) -> None:
    batches = policy(clock)
    assert not batches.live
    assert batches.caught_up()
    assert batches.live
    batches.committed()
    assert batches.live
    assert batches.caught_up()
    assert batches.live


def test_once_live_an_open_batch_does_not_wait_so_a_lone_event_commits_as_soon_as_nothing_is_waiting(
    clock: Clock,
) -> None:
    batches = policy(clock, size=100, delay=60.0)
    batches.caught_up()
    batches.committed()
    assert batches.timeout() == 0.1  # nothing open: wait for the next event as usual
    assert not batches.event_added()
    assert batches.timeout() == 0.0
    assert batches.nothing_waiting()


def test_once_live_batch_size_and_batch_delay_still_cap_a_batch_under_load(clock: Clock) -> None:
    batches = policy(clock, size=3, delay=0.5)
    batches.caught_up()
    batches.committed()
    assert not batches.event_added()
    assert not batches.event_added()
    assert batches.event_added()
    batches.committed()
    assert not batches.event_added()
    clock.advance(0.5)
    assert batches.event_added()


def test_committing_closes_the_batch_and_the_next_item_starts_a_new_count_and_timer(clock: Clock) -> None:
    batches = policy(clock, size=3, delay=0.5)
    batches.event_added()
    batches.event_added()
    clock.advance(0.4)
    batches.committed()
    assert not batches.open
    assert batches.events == 0
    assert not batches.event_added()
    clock.advance(0.4)
    assert not batches.event_added()
    assert batches.event_added()


def test_the_clock_defaults_to_time_monotonic() -> None:
    batches = BatchPolicy(10, 60.0)
    batches.event_added()
    assert batches.timeout() == pytest.approx(0.1)
    assert not batches.due()
    assert "1/10 events" in repr(batches)
    assert "catching up" in repr(batches)
