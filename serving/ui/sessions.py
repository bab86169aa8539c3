"""Dashboard sessions: a tuneloop API token, proved once at sign-in, becomes a random session key in a cookie.

The cookie holds only the key (its SHA-256 is stored), never the token. A session ends on sign-out, when it
expires, or at once when the token it was opened with is revoked. Roles are read from the policy on every
request, so a change of role counts without signing in again. Blocking: call these in a worker thread.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine

from serving.access import AccessPolicy, Principal
from serving.credentials import MAX_TOKEN_CHARS
from serving.errors import Unauthenticated
from store import tokens as token_repo
from store import ui_sessions as session_repo
from store.db import session_scope

SESSION_LIFETIME = timedelta(hours=12)
MAX_KEY_CHARS = 100


@dataclass(frozen=True, kw_only=True)
class SignedIn:
    principal: Principal
    csrf_token: str

    def csrf_ok(self, sent: str | None) -> bool:
        return sent is not None and hmac.compare_digest(sent.encode(), self.csrf_token.encode())


@dataclass(frozen=True, kw_only=True)
class NewSession:
    key: str
    signed_in: SignedIn


class DashboardSessions:
    def __init__(self, *, engine: Engine, access: AccessPolicy, lifetime: timedelta = SESSION_LIFETIME) -> None:
        self._engine = engine
        self._access = access
        self.lifetime = lifetime

    def sign_in(self, token: str) -> NewSession:
        """Open a session for the token's user; Unauthenticated for an unknown, revoked or malformed token."""
        token = token.strip()
        with session_scope(self._engine) as session:
            row = (
                token_repo.find_active_token(session=session, token=token)
                if 0 < len(token) <= MAX_TOKEN_CHARS
                else None
            )
            if row is None or row.id is None:
                raise Unauthenticated(
                    "that token is not valid (unknown or revoked)",
                    hint="Paste a token from `tuneloop token create USER_ID`, run on the service's host.",
                )
            opened = session_repo.open_session(
                session=session, user_id=row.user_id, token_id=row.id, lifetime=self.lifetime
            )
        return NewSession(key=opened.key, signed_in=self._signed_in(opened.row.user_id, opened.row.csrf_token))

    def find(self, key: str | None) -> SignedIn | None:
        """The live session of a cookie key, or None."""
        if not key or len(key) > MAX_KEY_CHARS:
            return None
        with session_scope(self._engine) as session:
            row = session_repo.find_live_session(session=session, key=key)
        return None if row is None else self._signed_in(row.user_id, row.csrf_token)

    def sign_out(self, key: str) -> None:
        with session_scope(self._engine) as session:
            session_repo.close_session(session=session, key=key)

    def _signed_in(self, user_id: str, csrf_token: str) -> SignedIn:
        return SignedIn(principal=self._access.principal(user_id, via="web"), csrf_token=csrf_token)
