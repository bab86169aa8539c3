"""App Home: published afresh whenever a user opens the Home tab."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.deps import BotDeps
from bot.home import publish_home


def register(app: AsyncApp, deps: BotDeps) -> None:
    async def show_home(body: dict[str, Any], event: dict[str, Any], client: AsyncWebClient) -> None:
        if event.get("tab", "home") == "home" and event.get("user") and await deps.deduper.first_delivery(body):
            await publish_home(deps, client, user_id=str(event["user"]))

    app.event("app_home_opened")(show_home)
