"""The correction modal's submission: validation errors go back in the ack; a reviewer's is approved at once."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot import views
from bot.deps import BotDeps
from bot.errors import reports_failures
from serving.errors import InvalidQuestion, NotFound

log = logging.getLogger(__name__)


def submitted_text(view: dict[str, Any]) -> str:
    values = (view.get("state") or {}).get("values") or {}
    field = (values.get(views.CORRECTION_INPUT_BLOCK) or {}).get(views.CORRECTION_INPUT_ACTION) or {}
    return str(field.get("value") or "")


def register(app: AsyncApp, deps: BotDeps) -> None:
    @reports_failures
    async def save_correction(
        ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], client: AsyncWebClient
    ) -> None:
        user_id = str(body["user"]["id"])
        target = views.CorrectionTarget.from_metadata(str(view.get("private_metadata") or "{}"))
        try:
            correction = deps.services.feedback.correct(
                interaction_id=target.interaction_id, user_id=user_id, text=submitted_text(view)
            )
        except (InvalidQuestion, NotFound) as error:
            message = error.message[0].upper() + error.message[1:] + (f". {error.hint}" if error.hint else ".")
            await ack(response_action="errors", errors={views.CORRECTION_INPUT_BLOCK: message})
            return
        await ack()
        if correction.status == "approved":
            text = "Thanks! Your correction is saved and approved; I will learn it in the next training run."
        else:
            text = "Thanks! Your correction is saved; a reviewer will look at it before I learn from it."
        if target.channel:
            await client.chat_postEphemeral(channel=target.channel, user=user_id, text=text, thread_ts=target.thread_ts)

    app.view(views.CORRECTION_MODAL)(save_correction)
