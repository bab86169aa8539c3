"""The "Correct this answer" message shortcut: the same modal as the button, from the message's menu."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.corrections import interaction_by_message, open_correction_modal
from bot.deps import BotDeps
from bot.errors import reports_failures

CORRECT_SHORTCUT = "correct_answer"


def register(app: AsyncApp, deps: BotDeps) -> None:
    @reports_failures
    async def correct_from_message(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        channel = str((body.get("channel") or {}).get("id", ""))
        message_ts = str((body.get("message") or {}).get("ts") or body.get("message_ts") or "")
        interaction = await interaction_by_message(deps, channel=channel, message_ts=message_ts)
        await open_correction_modal(
            deps=deps, client=client, trigger_id=str(body["trigger_id"]), interaction=interaction
        )

    app.message_shortcut(CORRECT_SHORTCUT)(correct_from_message)
