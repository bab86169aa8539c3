"""The edit modal of a reviewed answer: what is wrong goes back in the ack; the edit is written after it, with its
audit event, and the editor's Home tab is published again.

The submission is input like any other: the entry id in its metadata, the user's role and the text's bounds
(1 to 8,000 characters; Slack enforces the field's own limit only in its clients) are all checked here.
"""

from __future__ import annotations

import asyncio
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot import memory as reviewed_memory
from bot import views
from bot.action_values import parse_row_id
from bot.deps import BotDeps
from bot.errors import reports_failures
from bot.home import publish_home, reviewers_only
from serving.errors import TuneloopError

STALE_FORM = "This form can no longer be saved. Close it and use Edit in the Home tab again."


def submitted_answer(view: dict[str, Any]) -> str:
    state = view.get("state")
    values = state.get("values") if isinstance(state, dict) else None
    block = values.get(views.MEMORY_EDIT_BLOCK) if isinstance(values, dict) else None
    field = block.get(views.MEMORY_EDIT_ACTION) if isinstance(block, dict) else None
    value = field.get("value") if isinstance(field, dict) else None
    return value if isinstance(value, str) else ""


def register(app: AsyncApp, deps: BotDeps) -> None:
    engine = deps.services.engine

    @reports_failures
    async def save_edit(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], client: AsyncWebClient) -> None:
        user_id = str(body["user"]["id"])
        entry_id = parse_row_id(view.get("private_metadata"))
        if entry_id is None:
            await ack(response_action="errors", errors={views.MEMORY_EDIT_BLOCK: STALE_FORM})
            return
        if not deps.access.is_reviewer(user_id):
            await ack(response_action="errors", errors={views.MEMORY_EDIT_BLOCK: reviewers_only(deps)})
            await asyncio.to_thread(
                reviewed_memory.record_refusal,
                engine=engine,
                actor=user_id,
                action=reviewed_memory.EDIT,
                entry_id=entry_id,
            )
            return
        text = submitted_answer(view)
        try:
            # A read, so that the modal can show what is wrong; the write waits until after the ack.
            await asyncio.to_thread(reviewed_memory.check_edit, engine=engine, entry_id=entry_id, answer=text)
        except TuneloopError as error:
            problem = views.failure_text(message=error.message, hint=error.hint, ref=None)
            await ack(response_action="errors", errors={views.MEMORY_EDIT_BLOCK: problem})
            return
        await ack()
        try:
            reviewer = deps.access.principal(user_id, via="slack")
            await asyncio.to_thread(deps.services.memory.edit, entry_id, answer=text, by=reviewer)
            notice = f"Reviewed answer #{entry_id} is edited: it answers with the new text from the next question on."
        except TuneloopError as error:  # retired by someone else between the check and the write
            notice = views.failure_text(message=error.message, hint=error.hint, ref=None)
        await publish_home(deps, client, user_id=user_id, notice=notice)

    app.view(views.MEMORY_EDIT_MODAL)(save_edit)
