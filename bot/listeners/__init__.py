"""Every listener, one module per handler, grouped by kind as in Bolt's starter template."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.deps import BotDeps
from bot.listeners import actions, commands, events, shortcuts, views


def register(app: AsyncApp, deps: BotDeps) -> None:
    for kind in (events, actions, views, shortcuts, commands):
        kind.register(app, deps)
