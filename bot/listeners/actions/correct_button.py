"""The "Correct this answer" button: opens the modal pre-filled with the answer."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot import views
from bot.action_values import row_id
from bot.corrections import interaction_by_id, open_correction_modal
from bot.deps import BotDeps
from bot.errors import reports_failures


def register(app: AsyncApp, deps: BotDeps) -> None:
    @reports_failures
    async def open_correction(
        ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient
    ) -> None:
        await ack()
        interaction = await interaction_by_id(deps, row_id(action))
        await open_correction_modal(
            deps=deps, client=client, trigger_id=str(body["trigger_id"]), interaction=interaction
        )

    app.action(views.CORRECT_OPEN)(open_correction)
