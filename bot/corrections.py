"""Opening the correction modal (from the button or the message shortcut) and saving what it submits."""

from __future__ import annotations

import asyncio

from slack_sdk.web.async_client import AsyncWebClient

from bot import views
from bot.deps import BotDeps
from store import interactions as interaction_repo
from store.db import session_scope
from store.models import Interaction

NOT_AN_ANSWER = "This message is not one of my answers, so there is nothing to correct."


async def open_correction_modal(
    *, deps: BotDeps, client: AsyncWebClient, trigger_id: str, interaction: Interaction | None
) -> None:
    # The trigger id is valid for 3 seconds: open the modal before anything slow.
    if interaction is None or interaction.id is None or interaction.answer is None:
        await client.views_open(
            trigger_id=trigger_id, view=views.notice_modal(title="Nothing to correct", text=NOT_AN_ANSWER)
        )
        return
    target = views.CorrectionTarget(
        interaction_id=interaction.id, channel=interaction.channel, thread_ts=interaction.thread_ts
    )
    modal = views.correction_modal(target=target, question=interaction.question, answer=interaction.answer)
    await client.views_open(trigger_id=trigger_id, view=modal)


async def interaction_by_id(deps: BotDeps, interaction_id: int) -> Interaction | None:
    def read() -> Interaction | None:
        with session_scope(deps.services.engine) as session:
            return interaction_repo.get_interaction(session=session, interaction_id=interaction_id)

    return await asyncio.to_thread(read)


async def interaction_by_message(deps: BotDeps, *, channel: str, message_ts: str) -> Interaction | None:
    """The interaction whose answer is the bot's message `channel`/`message_ts`, if any."""

    def read() -> Interaction | None:
        with session_scope(deps.services.engine) as session:
            return interaction_repo.find_by_message(session=session, channel=channel, message_ts=message_ts)

    return await asyncio.to_thread(read)
