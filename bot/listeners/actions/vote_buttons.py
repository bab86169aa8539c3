"""The 👍/👎 buttons under an answer."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot import views
from bot.action_values import row_id
from bot.deps import BotDeps
from bot.errors import reports_failures
from bot.feedback import vote_and_confirm


def register(app: AsyncApp, deps: BotDeps) -> None:
    def handler(vote: int) -> Any:
        @reports_failures
        async def record_vote(
            ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient
        ) -> None:
            await ack()
            message = body.get("message") or {}
            await vote_and_confirm(
                deps=deps,
                client=client,
                interaction_id=row_id(action),
                user_id=str(body["user"]["id"]),
                vote=vote,
                channel=(body.get("channel") or {}).get("id"),
                thread_ts=message.get("thread_ts") or (body.get("container") or {}).get("thread_ts"),
            )

        return record_vote

    app.action(views.VOTE_UP)(handler(1))
    app.action(views.VOTE_DOWN)(handler(-1))
