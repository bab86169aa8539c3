"""👍/👎 reactions on the bot's answers count as votes."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.corrections import interaction_by_message
from bot.deps import BotDeps
from bot.feedback import vote_and_confirm

log = logging.getLogger(__name__)

REACTION_VOTES = {"+1": 1, "thumbsup": 1, "-1": -1, "thumbsdown": -1}


def reaction_vote(reaction: str) -> int | None:
    """+1, -1, or None for any other reaction; skin tones (`+1::skin-tone-3`) count the same."""
    return REACTION_VOTES.get(reaction.split("::", 1)[0])


def register(app: AsyncApp, deps: BotDeps) -> None:
    async def vote_by_reaction(body: dict[str, Any], event: dict[str, Any], client: AsyncWebClient) -> None:
        vote = reaction_vote(str(event.get("reaction", "")))
        item = event.get("item") or {}
        if vote is None or item.get("type") != "message" or not event.get("user"):
            return
        if not await deps.deduper.first_delivery(body):
            return
        interaction = await interaction_by_message(
            deps, channel=str(item.get("channel")), message_ts=str(item.get("ts"))
        )
        if interaction is None or interaction.id is None or interaction.answer is None:
            return  # not one of the bot's answers
        await vote_and_confirm(
            deps=deps,
            client=client,
            interaction_id=interaction.id,
            user_id=str(event["user"]),
            vote=vote,
            channel=interaction.channel,
            thread_ts=interaction.thread_ts,
        )

    app.event("reaction_added")(vote_by_reaction)
    # Subscribed by some installs; acknowledged so that Slack does not retry it.
    app.event("reaction_removed")(_ignore)


async def _ignore() -> None:
    return None
