from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.deps import BotDeps
from bot.listeners.commands import tuneloop_command


def register(app: AsyncApp, deps: BotDeps) -> None:
    tuneloop_command.register(app, deps)
