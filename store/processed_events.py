"""Processed events: claim an inbound event once, across processes, by inserting its unique key."""

from __future__ import annotations

from sqlalchemy import delete
from sqlmodel import Session, col

from store.db import insert_unless_present
from store.models import ProcessedEvent


def claim_event(*, session: Session, key: str) -> bool:
    """True for the first caller with `key`; False for every later one (a redelivery or a twin event)."""
    return insert_unless_present(session=session, row=ProcessedEvent(key=key))


def prune_events(*, session: Session, before_s: int) -> int:
    """Forget keys claimed before unix second `before_s`: Slack stops redelivering after minutes."""
    result = session.exec(delete(ProcessedEvent).where(col(ProcessedEvent.claimed_at_s) < before_s))
    session.commit()
    return int(result.rowcount or 0)
