"""Web dashboard sessions: opened with an API token, found by the hash of their cookie key, closed on sign-out."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session, col, delete, select

from store.models import ApiToken, UiSession, utcnow


def key_sha256(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True, kw_only=True)
class OpenedSession:
    row: UiSession
    key: str  # the cookie's value: the only time it exists outside the browser


def open_session(*, session: Session, user_id: str, token_id: int, lifetime: timedelta) -> OpenedSession:
    """A new session for `user_id`; expired sessions are pruned on the way (an index range)."""
    now = utcnow()
    session.exec(delete(UiSession).where(col(UiSession.expires_at) <= now))
    key = secrets.token_urlsafe(32)
    row = UiSession(
        key_sha256=key_sha256(key),
        user_id=user_id,
        token_id=token_id,
        csrf_token=secrets.token_urlsafe(32),
        expires_at=now + lifetime,
    )
    session.add(row)
    session.commit()
    session.refresh(row)
    return OpenedSession(row=row, key=key)


def find_live_session(*, session: Session, key: str, now: datetime | None = None) -> UiSession | None:
    """The unexpired session with this cookie key whose token is not revoked, or None."""
    statement = (
        select(UiSession)
        .join(ApiToken, col(ApiToken.id) == col(UiSession.token_id))
        .where(
            UiSession.key_sha256 == key_sha256(key),
            col(UiSession.expires_at) > (now or utcnow()),
            col(ApiToken.revoked_at).is_(None),
        )
    )
    return session.exec(statement).first()


def close_session(*, session: Session, key: str) -> None:
    session.exec(delete(UiSession).where(col(UiSession.key_sha256) == key_sha256(key)))
    session.commit()
