from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.deps import BotDeps
from bot.listeners.events import app_home, questions, reactions


def register(app: AsyncApp, deps: BotDeps) -> None:
    questions.register(app, deps)
    reactions.register(app, deps)
    app_home.register(app, deps)
