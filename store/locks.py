"""Named locks in the database, so that two service processes on one database never run a cycle at once.

A lock is a row: inserting it takes the lock (the primary key makes the insert atomic on SQLite and
PostgreSQL alike), deleting it gives it back. The holder refreshes `heartbeat_at` while it works; a row
whose heartbeat is older than its time-to-live belonged to a process that died, and may be taken over.
"""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import Session, col, delete, select

from store.db import insert_unless_present
from store.models import Lock, utcnow


def try_acquire(*, session: Session, name: str, holder: str, ttl_s: float) -> bool:
    stale = utcnow() - timedelta(seconds=ttl_s)
    session.exec(delete(Lock).where(col(Lock.name) == name, col(Lock.heartbeat_at) < stale))
    return insert_unless_present(session=session, row=Lock(name=name, holder=holder))


def refresh(*, session: Session, name: str, holder: str) -> bool:
    """Keep the lock alive; False when it is no longer ours (it expired and another process took it)."""
    lock = session.get(Lock, name)
    if lock is None or lock.holder != holder:
        return False
    lock.heartbeat_at = utcnow()
    session.add(lock)
    session.commit()
    return True


def release(*, session: Session, name: str, holder: str) -> None:
    session.exec(delete(Lock).where(col(Lock.name) == name, col(Lock.holder) == holder))
    session.commit()


def current_holder(*, session: Session, name: str, ttl_s: float) -> str | None:
    """Who holds the lock now; None when it is free or its holder stopped refreshing it."""
    lock = session.exec(select(Lock).where(Lock.name == name)).first()
    if lock is None or lock.heartbeat_at < utcnow() - timedelta(seconds=ttl_s):
        return None
    return lock.holder
