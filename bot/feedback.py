"""Votes from buttons and reactions: one path, one ephemeral confirmation."""

from __future__ import annotations

import asyncio

from slack_sdk.web.async_client import AsyncWebClient

from bot.deps import BotDeps


async def vote_and_confirm(
    *,
    deps: BotDeps,
    client: AsyncWebClient,
    interaction_id: int,
    user_id: str,
    vote: int,
    channel: str | None,
    thread_ts: str | None,
) -> None:
    feedback = await asyncio.to_thread(
        deps.services.feedback.vote, interaction_id=interaction_id, user_id=user_id, vote=vote
    )
    replaced = feedback.updated_at > feedback.created_at
    text = f"Thanks, your {'👍' if vote > 0 else '👎'} is recorded" + (
        " (it replaces your earlier vote)." if replaced else "."
    )
    if channel:
        await client.chat_postEphemeral(channel=channel, user=user_id, text=text, thread_ts=thread_ts)
