"""The search field of App Home's reviewed answers: Enter publishes the tab again with the entries nearest in
meaning (an empty search shows the newest). Reviewers only, as the buttons beside it."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot import memory as reviewed_memory
from bot import views
from bot.deps import BotDeps
from bot.errors import reports_failures
from bot.home import publish_home, refused_unless_reviewer


def register(app: AsyncApp, deps: BotDeps) -> None:
    @reports_failures
    async def search(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        user_id = str(body["user"]["id"])
        if await refused_unless_reviewer(deps, client, user_id=user_id, action=reviewed_memory.SEARCH, entry_id=None):
            return
        value = action.get("value")
        # Slack bounds the field; a forged value is cut to the same length rather than refused.
        text = value.strip()[: views.SEARCH_CHARS] if isinstance(value, str) else ""
        await publish_home(deps, client, user_id=user_id, search=text or None)

    app.action(views.MEMORY_SEARCH)(search)
