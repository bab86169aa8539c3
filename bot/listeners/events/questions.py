"""Questions: an @mention in a channel, or any message in a DM, answered in the message's thread.

Ack at once (Bolt acks events before the listener runs); the lazy listener posts a placeholder, streams the
answer into it with chat.update at most once per `stream_interval_s`, then renders the final blocks.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from decimal import Decimal, InvalidOperation
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import views
from bot.deps import BotDeps
from bot.errors import new_ref, unexpected_message, user_message
from serving.answers import Answer, Question
from serving.client import Message
from serving.errors import TuneloopError
from store import interactions as interaction_repo
from store.db import session_scope

log = logging.getLogger(__name__)

# Plain user messages; edits (message_changed), deletions, bot posts and joins carry other subtypes.
ANSWERED_SUBTYPES = {None, "thread_broadcast", "file_share"}
THREAD_HISTORY_LIMIT = 50


def register(app: AsyncApp, deps: BotDeps) -> None:
    async def ack_event() -> None:
        """Bolt acks events itself, before any listener runs; the work happens in the lazy listener."""

    async def answer_mention(
        body: dict[str, Any], event: dict[str, Any], client: AsyncWebClient, context: AsyncBoltContext
    ) -> None:
        if _is_user_message(event, bot_user_id=context.bot_user_id) and await deps.deduper.first_delivery(body):
            await answer(deps=deps, client=client, event=event, bot_user_id=context.bot_user_id)

    async def answer_direct_message(
        body: dict[str, Any], event: dict[str, Any], client: AsyncWebClient, context: AsyncBoltContext
    ) -> None:
        # In channels only mentions are questions; they arrive as app_mention (and are deduped against this).
        is_question = event.get("channel_type") == "im" and _is_user_message(event, bot_user_id=context.bot_user_id)
        if is_question and await deps.deduper.first_delivery(body):
            await answer(deps=deps, client=client, event=event, bot_user_id=context.bot_user_id)

    app.event("app_mention")(ack=ack_event, lazy=[answer_mention])
    app.event("message")(ack=ack_event, lazy=[answer_direct_message])


def _is_user_message(event: dict[str, Any], *, bot_user_id: str | None) -> bool:
    return (
        event.get("subtype") in ANSWERED_SUBTYPES
        and not event.get("bot_id")
        and bool(event.get("user"))
        and event.get("user") != bot_user_id
        and bool(event.get("ts"))
    )


def question_text(text: str, *, bot_user_id: str | None) -> str:
    """The message without the bot's own mention (`<@U123>` or `<@U123|name>`)."""
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}(\|[^>]*)?>", " ", text)
    return text.strip()


def _ts(value: str) -> Decimal:
    try:
        return Decimal(value)
    except InvalidOperation:
        return Decimal(0)


async def thread_context(
    *, client: AsyncWebClient, channel: str, thread_ts: str, before_ts: str, bot_user_id: str | None
) -> list[Message]:
    """The thread's earlier messages as chat turns: the bot's answers are the assistant's, the rest the user's."""
    try:
        response = await client.conversations_replies(channel=channel, ts=thread_ts, limit=THREAD_HISTORY_LIMIT)
    except SlackApiError as error:
        # A missing scope must not cost the answer: answer without the context.
        log.warning("slack.thread_context_failed channel=%s error=%s", channel, error.response.get("error"))
        return []
    turns: list[Message] = []
    for message in response.get("messages") or []:
        if _ts(str(message.get("ts", "0"))) >= _ts(before_ts):
            continue
        from_bot = bool(message.get("bot_id")) or (bot_user_id is not None and message.get("user") == bot_user_id)
        if from_bot:
            if views.is_answer_message(message) and message.get("text"):
                turns.append({"role": "assistant", "content": str(message["text"])})
        elif message.get("subtype") in ANSWERED_SUBTYPES:
            text = question_text(str(message.get("text") or ""), bot_user_id=bot_user_id)
            if text:
                turns.append({"role": "user", "content": text})
    return turns


async def answer(*, deps: BotDeps, client: AsyncWebClient, event: dict[str, Any], bot_user_id: str | None) -> None:
    channel, ts, user = str(event["channel"]), str(event["ts"]), str(event["user"])
    if not await deps.deduper.message(channel, ts):
        return
    thread_ts = str(event.get("thread_ts") or ts)
    placeholder_ts: str | None = None
    try:
        context: list[Message] = []
        if event.get("thread_ts"):
            context = await thread_context(
                client=client, channel=channel, thread_ts=thread_ts, before_ts=ts, bot_user_id=bot_user_id
            )
        posted = await client.chat_postMessage(
            channel=channel, thread_ts=thread_ts, text=views.THINKING_TEXT, blocks=views.thinking_blocks()
        )
        placeholder_ts = str(posted["ts"])
        question = Question(
            text=question_text(str(event.get("text") or ""), bot_user_id=bot_user_id),
            user_id=user,
            source="slack",
            context=context,
            channel=channel,
            thread_ts=thread_ts,
            message_ts=ts,
        )
        await _stream_answer(deps=deps, client=client, question=question, channel=channel, answer_ts=placeholder_ts)
    except Exception as error:
        ref = new_ref()
        log.error("slack.answer_failed ref=%s channel=%s ts=%s", ref, channel, ts, exc_info=error)
        text = unexpected_message(ref)
        try:
            if placeholder_ts is None:
                await client.chat_postMessage(channel=channel, thread_ts=thread_ts, text=text)
            else:
                await client.chat_update(
                    channel=channel, ts=placeholder_ts, text=text, blocks=views.failure_blocks(text)
                )
        except SlackApiError as slack_error:
            log.error("slack.answer_failure_not_shown ref=%s error=%s", ref, slack_error)


async def _stream_answer(
    *, deps: BotDeps, client: AsyncWebClient, question: Question, channel: str, answer_ts: str
) -> None:
    parts: list[str] = []
    last_update = time.monotonic()
    final: Answer | None = None
    try:
        async for chunk in deps.services.answers.ask_stream(question):
            if isinstance(chunk, Answer):
                final = chunk
                continue
            parts.append(chunk)
            if time.monotonic() - last_update >= deps.stream_interval_s and "".join(parts).strip():
                last_update = time.monotonic()
                await _update_partial(client=client, channel=channel, ts=answer_ts, text="".join(parts))
    except TuneloopError as error:
        if error.interaction_id is not None:
            await _set_message_ts(deps, error.interaction_id, answer_ts)
        text = user_message(error)
        await client.chat_update(channel=channel, ts=answer_ts, text=text, blocks=views.failure_blocks(text))
        return
    assert final is not None, "ask_stream ends with an Answer"
    # Before the buttons appear, so that a reaction or a shortcut on the message finds the interaction.
    await _set_message_ts(deps, final.interaction_id, answer_ts)
    await client.chat_update(
        channel=channel,
        ts=answer_ts,
        text=final.text[: views.MESSAGE_TEXT_CHARS] or "(no text)",
        blocks=views.answer_blocks(
            text=final.text,
            interaction_id=final.interaction_id,
            adapter_version=final.adapter_version,
            memory=final.memory,
            memory_mode=final.memory_mode,
        ),
    )
    log.info("slack.answered interaction=%s channel=%s ts=%s", final.interaction_id, channel, answer_ts)


async def _update_partial(*, client: AsyncWebClient, channel: str, ts: str, text: str) -> None:
    try:
        await client.chat_update(channel=channel, ts=ts, text=text, blocks=views.streaming_blocks(text))
    except SlackApiError as error:
        # A dropped progress update costs nothing: the final update carries the whole answer.
        log.warning("slack.stream_update_failed channel=%s error=%s", channel, error.response.get("error"))


async def _set_message_ts(deps: BotDeps, interaction_id: int, message_ts: str) -> None:
    def write() -> None:
        with session_scope(deps.services.engine) as session:
            interaction_repo.set_message_ts(session=session, interaction_id=interaction_id, message_ts=message_ts)

    await asyncio.to_thread(write)
