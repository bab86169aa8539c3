"""The correction modal's submission: validation errors go back in the ack; a reviewer's is approved at once.

A submission is Slack's echo of the modal we opened, but it is still input: its text is bounded here
(Slack enforces the modal's max_length only in its own clients) and unreadable metadata gets a kind message.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot import views
from bot.deps import BotDeps
from bot.errors import reports_failures
from serving.errors import InvalidQuestion, NotFound
from store.models import MAX_ROW_ID

log = logging.getLogger(__name__)

STALE_FORM = 'This form can no longer be saved. Close it and use "Correct this answer" on the answer again.'


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def submitted_text(view: dict[str, Any]) -> str:
    values = _mapping(_mapping(view.get("state")).get("values"))
    field = _mapping(_mapping(values.get(views.CORRECTION_INPUT_BLOCK)).get(views.CORRECTION_INPUT_ACTION))
    value = field.get("value")
    return value if isinstance(value, str) else ""


def submitted_target(view: dict[str, Any]) -> views.CorrectionTarget | None:
    """The answer the modal was opened on, or None when its metadata is not what we wrote."""
    try:
        target = views.CorrectionTarget.from_metadata(str(view.get("private_metadata") or ""))
    except (ValueError, KeyError, TypeError):
        return None
    if not 1 <= target.interaction_id <= MAX_ROW_ID:
        return None
    if not all(value is None or isinstance(value, str) for value in (target.channel, target.thread_ts)):
        return None
    return target


def too_long(chars: int) -> str:
    return f"The correction is {chars:,} characters; the limit is {views.INPUT_CHARS:,}. Please shorten it."


def register(app: AsyncApp, deps: BotDeps) -> None:
    @reports_failures
    async def save_correction(
        ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], client: AsyncWebClient
    ) -> None:
        user_id = str(body["user"]["id"])
        target = submitted_target(view)
        text = submitted_text(view)
        if target is None or len(text) > views.INPUT_CHARS:
            # Refused before the store is asked: the user can fix the text; a broken form they can only reopen.
            log.info("slack.correction_refused user=%s chars=%d stale=%s", user_id, len(text), target is None)
            problem = STALE_FORM if target is None else too_long(len(text))
            await ack(response_action="errors", errors={views.CORRECTION_INPUT_BLOCK: problem})
            return
        feedback = deps.services.feedback
        try:
            # A read, so that the modal can show what is wrong; the write waits until after the ack.
            await asyncio.to_thread(feedback.check_correction, interaction_id=target.interaction_id, text=text)
        except (InvalidQuestion, NotFound) as error:
            message = error.message[0].upper() + error.message[1:] + (f". {error.hint}" if error.hint else ".")
            await ack(response_action="errors", errors={views.CORRECTION_INPUT_BLOCK: message})
            return
        await ack()
        correction = await asyncio.to_thread(
            feedback.correct, interaction_id=target.interaction_id, user_id=user_id, text=text
        )
        if correction.status == "approved":
            thanks = "Thanks! Your correction is saved and approved; I will learn it in the next training run."
        else:
            thanks = "Thanks! Your correction is saved; a reviewer will look at it before I learn from it."
        if target.channel:
            await client.chat_postEphemeral(
                channel=target.channel, user=user_id, text=thanks, thread_ts=target.thread_ts
            )

    app.view(views.CORRECTION_MODAL)(save_correction)
