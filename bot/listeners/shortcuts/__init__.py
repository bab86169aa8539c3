from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.deps import BotDeps
from bot.listeners.shortcuts import correct_message


def register(app: AsyncApp, deps: BotDeps) -> None:
    correct_message.register(app, deps)
