"""Processed events: claim an inbound event once, across processes, by inserting its unique key."""

from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from store.models import ProcessedEvent


def claim_event(*, session: Session, key: str) -> bool:
    """True for the first caller with `key`; False for every later one (a redelivery or a twin event)."""
    session.add(ProcessedEvent(key=key))
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        return False
    return True


def prune_events(*, session: Session, before_s: int) -> int:
    """Forget keys claimed before unix second `before_s`: Slack stops redelivering after minutes."""
    result = session.exec(delete(ProcessedEvent).where(col(ProcessedEvent.claimed_at_s) < before_s))
    session.commit()
    return int(result.rowcount or 0)
