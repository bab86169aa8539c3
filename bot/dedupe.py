"""Answer once: claim each Slack event id and each user message in the store before handling it.

Slack redelivers an event when the ack was late (X-Slack-Retry-Num, same event_id; in Socket Mode the
retry headers are lost, so the event id is what counts), and it delivers one @mention twice (app_mention
and message, two event ids, one channel+ts). A unique key in the database makes the claim atomic across
requests and processes, and survives a restart.

Claims are store writes: they run in a worker thread, and only after the ack (a busy database must never
delay an ack past Slack's 3 seconds, which would bring the very retries this deduplicates).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

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

    async def event(self, event_id: str) -> bool:
        return await asyncio.to_thread(self.first_time, f"slack:event:{event_id}")

    async def message(self, channel: str, ts: str) -> bool:
        return await asyncio.to_thread(self.first_time, f"slack:message:{channel}:{ts}")

    async def first_delivery(self, body: dict[str, Any]) -> bool:
        """False for an event callback whose event id was claimed before (a retry, a Socket Mode redelivery)."""
        event_id = body.get("event_id")
        if body.get("type") != "event_callback" or not event_id:
            return True
        return await self.event(str(event_id))
