from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.deps import BotDeps
from bot.listeners.views import correction_submitted, memory_edited


def register(app: AsyncApp, deps: BotDeps) -> None:
    correction_submitted.register(app, deps)
    memory_edited.register(app, deps)
