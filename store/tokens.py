"""API tokens: created with their plain text shown once, found by hash, listed and revoked."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlmodel import Session, col, select

from store.models import ApiToken, utcnow

TOKEN_PREFIX = "tl_"
SHOWN_PREFIX_CHARS = 10


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, kw_only=True)
class IssuedToken:
    row: ApiToken
    token: str  # the only time the plain text exists outside the caller


def create_token(*, session: Session, user_id: str, label: str | None = None) -> IssuedToken:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user_id=user_id, token_sha256=token_sha256(token), prefix=token[:SHOWN_PREFIX_CHARS], label=label)
    session.add(row)
    session.commit()
    session.refresh(row)
    return IssuedToken(row=row, token=token)


def find_active_token(*, session: Session, token: str) -> ApiToken | None:
    """The unrevoked token with this plain text, or None. Compares hashes, so timing reveals nothing useful."""
    statement = select(ApiToken).where(ApiToken.token_sha256 == token_sha256(token), col(ApiToken.revoked_at).is_(None))
    return session.exec(statement).first()


def touch_token(*, session: Session, token_id: int) -> None:
    row = session.get(ApiToken, token_id)
    if row is not None:
        row.last_used_at = utcnow()
        session.add(row)
        session.commit()


def list_tokens(*, session: Session, user_id: str | None = None, include_revoked: bool = False) -> list[ApiToken]:
    statement = select(ApiToken).order_by(col(ApiToken.id))
    if user_id is not None:
        statement = statement.where(ApiToken.user_id == user_id)
    if not include_revoked:
        statement = statement.where(col(ApiToken.revoked_at).is_(None))
    return list(session.exec(statement).all())


def revoke_token(*, session: Session, token_id: int) -> ApiToken:
    row = session.get(ApiToken, token_id)
    if row is None:
        raise LookupError(f"token {token_id} does not exist")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.add(row)
        session.commit()
        session.refresh(row)
    return row
