"""Answer once: claim each Slack event id and each user message in the store before handling it.

Slack redelivers an event when the ack was late (X-Slack-Retry-Num, same event_id; in Socket Mode the
retry headers are lost, so the event id is what counts), and it delivers one @mention twice (app_mention
and message, two event ids, one channel+ts). A unique key in the database makes the claim atomic across
requests and processes, and survives a restart.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import Engine

from store import processed_events
from store.db import session_scope

log = logging.getLogger(__name__)

# Slack gives up redelivering after about an hour: a day of keys is plenty.
KEEP_KEYS_S = 24 * 3600
PRUNE_EVERY = 500


class EventDeduper:
    def __init__(self, *, engine: Engine) -> None:
        self._engine = engine
        self._claims = 0

    def first_time(self, key: str) -> bool:
        """True once per key; False for every later claim of the same key."""
        with session_scope(self._engine) as session:
            claimed = processed_events.claim_event(session=session, key=key[:200])
            self._claims += 1
            if self._claims % PRUNE_EVERY == 0:
                processed_events.prune_events(session=session, before_s=int(time.time()) - KEEP_KEYS_S)
        if not claimed:
            log.info("slack.duplicate key=%s", key)
        return claimed

    def event(self, event_id: str) -> bool:
        return self.first_time(f"slack:event:{event_id}")

    def message(self, channel: str, ts: str) -> bool:
        return self.first_time(f"slack:message:{channel}:{ts}")
