"""API credentials: a bearer token proves a user id; the policy gives it a role.

The database is the only place tokens live (hashed), so a token created or revoked on the host counts at once
in every service process on the same database.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, timedelta

from sqlalchemy import Engine

from serving.access import AccessPolicy, Principal
from serving.errors import Unauthenticated
from store import tokens as token_repo
from store.db import session_scope
from store.models import utcnow

log = logging.getLogger(__name__)

# last_used_at is for people reading `token list`: a minute's precision spares a write per request.
TOUCH_EVERY = timedelta(minutes=1)
MAX_TOKEN_CHARS = 200


class Authenticator:
    def __init__(self, *, engine: Engine, access: AccessPolicy) -> None:
        self._engine = engine
        self._access = access

    @property
    def access(self) -> AccessPolicy:
        return self._access

    async def from_bearer(self, authorization: str | None) -> Principal:
        """The principal of an `Authorization: Bearer <token>` header; Unauthenticated otherwise."""
        token = _bearer_token(authorization)
        user_id = await asyncio.to_thread(self._lookup, token)
        if user_id is None:
            raise Unauthenticated(
                "the token is not valid (unknown or revoked)",
                hint="Create a new one with `tuneloop token create USER_ID` on the service's host.",
            )
        return self._access.principal(user_id, via="token")

    def _lookup(self, token: str) -> str | None:
        with session_scope(self._engine) as session:
            row = token_repo.find_active_token(session=session, token=token)
            if row is None or row.id is None:
                return None
            last = row.last_used_at
            if last is None or utcnow() - (last if last.tzinfo else last.replace(tzinfo=UTC)) > TOUCH_EVERY:
                token_repo.touch_token(session=session, token_id=row.id)
            return row.user_id


def _bearer_token(authorization: str | None) -> str:
    hint = "Send `Authorization: Bearer <token>`; create a token with `tuneloop token create USER_ID`."
    if not authorization:
        raise Unauthenticated("this route needs a credential", hint=hint)
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_CHARS:
        raise Unauthenticated("the Authorization header is not a bearer token", hint=hint)
    return token
