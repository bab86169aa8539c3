"""Opening the correction modal (from the button or the message shortcut) and saving what it submits."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from slack_sdk.web.async_client import AsyncWebClient

from bot import views
from bot.deps import BotDeps
from bot.memory import matched_entry
from store import interactions as interaction_repo
from store.db import session_scope
from store.models import Interaction

log = logging.getLogger(__name__)

NOT_AN_ANSWER = "This message is not one of my answers, so there is nothing to correct."
# Slack's trigger id lasts 3 seconds: past this, the modal opens without saying what the correction replaces.
OUTLOOK_TIMEOUT_S = 1.5


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
    outlook = await correction_outlook(deps, interaction)
    modal = views.correction_modal(
        target=target, question=interaction.question, answer=interaction.answer, outlook=outlook
    )
    await client.views_open(trigger_id=trigger_id, view=modal)


async def correction_outlook(deps: BotDeps, interaction: Interaction) -> views.CorrectionOutlook | None:
    """The reviewed entry the answer came from and whether a correction replaces it (a store read and one
    embedding, about 15 ms), so that a wrong match is fixed in one step."""
    memory = deps.services.memory
    outlook = await asyncio.to_thread(matched_entry, engine=deps.services.engine, interaction=interaction)
    if outlook is None:
        return outlook
    try:
        replaces = await asyncio.wait_for(
            asyncio.to_thread(memory.entry_a_correction_replaces, interaction),
            timeout=OUTLOOK_TIMEOUT_S,
        )
    except Exception as error:  # the modal matters more than the forecast: open it without one
        log.warning("slack.correction_outlook_failed interaction=%s error=%s", interaction.id, type(error).__name__)
        return outlook
    return dataclasses.replace(outlook, decided=True, replaces=replaces)


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
