"""Engine restarts back off: doubling waits up to a cap, and a fresh start once the engine has served."""

from __future__ import annotations

from tuneloop.service import RestartBackoff


def test_restarts_wait_longer_each_time_up_to_the_cap() -> None:
    backoff = RestartBackoff(first_s=2.0, cap_s=60.0)
    assert [backoff.next_delay() for _ in range(8)] == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]


def test_an_engine_that_served_starts_over_from_the_first_wait() -> None:
    backoff = RestartBackoff(first_s=2.0, cap_s=60.0)
    for _ in range(4):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() == 2.0
