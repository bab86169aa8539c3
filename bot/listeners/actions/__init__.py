from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.deps import BotDeps
from bot.listeners.actions import (
    correct_button,
    memory_buttons,
    memory_search,
    review_buttons,
    rollback_button,
    vote_buttons,
)


def register(app: AsyncApp, deps: BotDeps) -> None:
    vote_buttons.register(app, deps)
    correct_button.register(app, deps)
    review_buttons.register(app, deps)
    rollback_button.register(app, deps)
    memory_buttons.register(app, deps)
    memory_search.register(app, deps)
