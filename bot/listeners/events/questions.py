"""Questions: an @mention in a channel, or any message in a DM, answered in the message's thread.

Ack at once (Bolt acks events before the listener runs); the lazy listener asks the model and hands the text to a
`bot.streaming.Reply`: Slack's chat streaming methods from the first words on, or a placeholder edited with
chat.update where the workspace refuses them; then the final render with the buttons and the footer.
"""

from __future__ import annotations

import asyncio
import logging
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import views
from bot.deps import BotDeps
from bot.errors import new_ref, unexpected_message, user_message
from bot.streaming import Reply, open_reply
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
            await answer(
                deps=deps,
                client=client,
                event=event,
                bot_user_id=context.bot_user_id,
                team_id=context.team_id or context.enterprise_id,
            )

    async def answer_direct_message(
        body: dict[str, Any], event: dict[str, Any], client: AsyncWebClient, context: AsyncBoltContext
    ) -> None:
        # In channels only mentions are questions; they arrive as app_mention (and are deduped against this).
        is_question = event.get("channel_type") == "im" and _is_user_message(event, bot_user_id=context.bot_user_id)
        if is_question and await deps.deduper.first_delivery(body):
            await answer(
                deps=deps,
                client=client,
                event=event,
                bot_user_id=context.bot_user_id,
                team_id=context.team_id or context.enterprise_id,
            )

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


async def answer(
    *, deps: BotDeps, client: AsyncWebClient, event: dict[str, Any], bot_user_id: str | None, team_id: str | None
) -> None:
    channel, ts, user = str(event["channel"]), str(event["ts"]), str(event["user"])
    if not await deps.deduper.message(channel, ts):
        return
    thread_ts = str(event.get("thread_ts") or ts)
    reply = open_reply(
        client=client,
        support=deps.streaming,
        channel=channel,
        thread_ts=thread_ts,
        user=user,
        # The recipient's own team (a Slack Connect user's may differ from the workspace's).
        team=str(event.get("user_team") or team_id or "") or None,
        interval_s=deps.stream_interval_s,
    )
    try:
        context: list[Message] = []
        if event.get("thread_ts"):
            context = await thread_context(
                client=client, channel=channel, thread_ts=thread_ts, before_ts=ts, bot_user_id=bot_user_id
            )
        await reply.open()
        question = Question(
            text=question_text(str(event.get("text") or ""), bot_user_id=bot_user_id),
            user_id=user,
            source="slack",
            context=context,
            channel=channel,
            thread_ts=thread_ts,
            message_ts=ts,
        )
        await _stream_answer(deps=deps, reply=reply, question=question, channel=channel)
    except Exception as error:
        ref = new_ref()
        log.error("slack.answer_failed ref=%s channel=%s ts=%s", ref, channel, ts, exc_info=error)
        try:
            await reply.fail(unexpected_message(ref))
        except SlackApiError as slack_error:
            log.error("slack.answer_failure_not_shown ref=%s error=%s", ref, slack_error)


async def _stream_answer(*, deps: BotDeps, reply: Reply, question: Question, channel: str) -> None:
    parts: list[str] = []
    final: Answer | None = None
    try:
        async for chunk in deps.services.answers.ask_stream(question):
            if isinstance(chunk, Answer):
                final = chunk
                continue
            parts.append(chunk)
            await reply.progress("".join(parts))
    except TuneloopError as error:
        existed = reply.ts is not None
        if existed and error.interaction_id is not None:
            await _set_message_ts(deps, error.interaction_id, str(reply.ts))
        answer_ts = await reply.fail(user_message(error))
        if not existed and error.interaction_id is not None:
            await _set_message_ts(deps, error.interaction_id, answer_ts)
        return
    assert final is not None, "ask_stream ends with an Answer"
    answer_ts = await reply.message_ts(final.text)
    # Before the buttons appear, so that a reaction or a shortcut on the message finds the interaction.
    await _set_message_ts(deps, final.interaction_id, answer_ts)
    await reply.finish(final)
    log.info("slack.answered interaction=%s channel=%s ts=%s", final.interaction_id, channel, answer_ts)


async def _set_message_ts(deps: BotDeps, interaction_id: int, message_ts: str) -> None:
    def write() -> None:
        with session_scope(deps.services.engine) as session:
            interaction_repo.set_message_ts(session=session, interaction_id=interaction_id, message_ts=message_ts)

    await asyncio.to_thread(write)
