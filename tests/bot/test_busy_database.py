"""A busy database never delays a Slack ack: acks need no store, and the work after them waits its turn.

Slack retries an event whose ack takes longer than 3 seconds, and shows the user an error for a slash command
or a click. Here a second connection holds SQLite's write lock (BEGIN IMMEDIATE) while signed @mentions,
and a retry of one of them, arrive: every ack must still come back at once, and once the lock is released
each mention is answered exactly once.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from tests.bot.conftest import CHANNEL, EMPLOYEE
from tests.bot.slack_requests import SlackSender, app_mention, event_callback
from tests.bot.slack_stub import SlackStub
from tests.bot.test_questions import replies_in, wait_for_reply
from tests.conftest import RunningService

MENTIONS = 10
# Well under Slack's 3 seconds, with room for a slow CI machine; an ack that waited for the lock would take
# as long as the lock is held (this test holds it until every ack is in).
ACK_LIMIT_S = 1.0


@contextmanager
def write_lock_held(service: RunningService) -> Iterator[None]:
    """Hold the service's SQLite database busy: no other connection can write until the block ends."""
    path = service.settings.store_url.removeprefix("sqlite:///")
    holder = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_acks_answer_at_once_while_the_database_is_held_busy(
    dead_slack_service: RunningService, slack_stub: SlackStub
) -> None:
    # A client that gives up when Slack would: an ack held up by the lock fails the test instead of hanging it.
    slack = SlackSender(dead_slack_service.url, timeout_s=3.0)
    texts = [f"<@U_BOT> question {i} while the database is busy" for i in range(MENTIONS)]
    thread_ts = [slack_stub.add_message(CHANNEL, text, user=EMPLOYEE) for text in texts]
    callbacks = [
        event_callback(app_mention(channel=CHANNEL, user=EMPLOYEE, text=text, ts=ts))
        for text, ts in zip(texts, thread_ts, strict=True)
    ]

    def ack_seconds(callback: dict[str, object], retry_num: int | None = None) -> float:
        started = time.perf_counter()
        response = slack.event(callback, retry_num=retry_num)
        assert response.status_code == 200
        return time.perf_counter() - started

    try:
        with write_lock_held(dead_slack_service), ThreadPoolExecutor(max_workers=MENTIONS) as pool:
            waits = list(pool.map(ack_seconds, callbacks))
            waits.append(ack_seconds(callbacks[0], retry_num=1))  # Slack's retry of the first one, also acked
            assert max(waits) < ACK_LIMIT_S, f"acks took up to {max(waits):.2f}s with the database busy"
            # The lock really held the work back: nothing was answered while it was held.
            assert slack_stub.calls_to("chat.postMessage") == []

        for ts in thread_ts:
            wait_for_reply(slack_stub, channel=CHANNEL, thread_ts=ts)
        slack_stub.settle()
        assert [len(replies_in(slack_stub, ts)) for ts in thread_ts] == [1] * MENTIONS
    finally:
        slack.close()
