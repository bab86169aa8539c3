"""Approve / Reject on a pending correction in App Home; the Home tab is published again with the outcome."""

from __future__ import annotations

import asyncio
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot import views
from bot.action_values import row_id
from bot.deps import BotDeps
from bot.errors import reports_failures
from bot.home import publish_home
from serving.errors import TuneloopError


def register(app: AsyncApp, deps: BotDeps) -> None:
    def handler(approve: bool) -> Any:
        @reports_failures
        async def review(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient) -> None:
            await ack()
            user_id = str(body["user"]["id"])
            correction_id = row_id(action)
            try:
                await asyncio.to_thread(
                    deps.services.feedback.review, correction_id=correction_id, user_id=user_id, approve=approve
                )
                notice = f"Correction {correction_id} {'approved' if approve else 'rejected'}."
            except TuneloopError as error:
                # Forbidden (not a reviewer), Conflict (someone reviewed it first), NotFound: say so on the tab.
                notice = error.message + (f". {error.hint}" if error.hint else "")
            await publish_home(deps, client, user_id=user_id, notice=notice)

        return review

    app.action(views.REVIEW_APPROVE)(handler(True))
    app.action(views.REVIEW_REJECT)(handler(False))
