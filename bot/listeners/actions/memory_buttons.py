"""Edit and Retire on a reviewed answer in App Home. Reviewers only, judged on the clicking user from Slack's
signed payload: anyone else's click (a stale or forged view) is refused, audited and told why on their Home tab.
"""

from __future__ import annotations

import asyncio
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot import memory as reviewed_memory
from bot import views
from bot.action_values import row_id
from bot.deps import BotDeps
from bot.errors import reports_failures
from bot.home import publish_home, refused_unless_reviewer
from serving.errors import TuneloopError

TOO_LONG_FOR_SLACK = (
    "This answer is {chars:,} characters, over the {limit:,} a Slack text field holds, so it cannot be edited "
    "here. Edit it through tuneloop's HTTP API, or retire it and correct the answer again."
)


def register(app: AsyncApp, deps: BotDeps) -> None:
    @reports_failures
    async def open_edit(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        user_id = str(body["user"]["id"])
        entry_id = row_id(action)
        if await refused_unless_reviewer(deps, client, user_id=user_id, action=reviewed_memory.EDIT, entry_id=entry_id):
            return
        try:
            entry = await asyncio.to_thread(
                reviewed_memory.entry_to_edit, engine=deps.services.engine, entry_id=entry_id
            )
        except TuneloopError as error:  # gone or retired since the tab was drawn
            await publish_home(deps, client, user_id=user_id, notice=_sentence(error))
            return
        if len(entry.answer) > views.INPUT_CHARS:
            text = TOO_LONG_FOR_SLACK.format(chars=len(entry.answer), limit=views.INPUT_CHARS)
            view = views.notice_modal(title="Too long to edit here", text=text)
        else:
            view = views.memory_edit_modal(entry)
        await client.views_open(trigger_id=str(body["trigger_id"]), view=view)

    @reports_failures
    async def retire(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        user_id = str(body["user"]["id"])
        entry_id = row_id(action)
        if await refused_unless_reviewer(
            deps, client, user_id=user_id, action=reviewed_memory.RETIRE, entry_id=entry_id
        ):
            return
        try:
            reviewer = deps.access.principal(user_id, via="slack")
            await asyncio.to_thread(deps.services.memory.retire, entry_id, by=reviewer)
            notice = f"Reviewed answer #{entry_id} is retired: it no longer answers questions."
        except TuneloopError as error:  # NotFound, or Conflict: someone retired it first
            notice = _sentence(error)
        await publish_home(deps, client, user_id=user_id, notice=notice)

    app.action(views.MEMORY_EDIT)(open_edit)
    app.action(views.MEMORY_RETIRE)(retire)


def _sentence(error: TuneloopError) -> str:
    return views.failure_text(message=error.message, hint=error.hint, ref=None)
