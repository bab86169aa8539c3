"""The Roll back button on a promotion posted in the admins' channel.

Admins only, judged on the clicking user from Slack's signed payload. Everyone else's click goes to the
admin service, which refuses it and audits the refusal, and they are told why. An admin's click rolls
back to the version the message names; the message then says who rolled back, and the button is gone.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import views
from bot.deps import BotDeps
from bot.errors import reports_failures, tell_user
from serving.errors import Forbidden, TuneloopError

log = logging.getLogger(__name__)
SOURCE = "slack"


def register(app: AsyncApp, deps: BotDeps) -> None:
    @reports_failures
    async def roll_back(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        user_id = str(body["user"]["id"])
        target = views.RollbackTarget.from_value(str(action["value"]))
        active = deps.services.registry.active.version
        if deps.access.is_admin(user_id) and active != target.promoted:
            # An old message's button must not undo whatever was promoted since.
            text = (
                f":information_source: `{target.promoted}` no longer serves (`{active}` does), so nothing was "
                "rolled back. `/tuneloop rollback VERSION` serves any version."
            )
            await tell_user(client=client, body=body, text=text)
            return
        try:
            adapter = await deps.services.admin.rollback(version=target.to, user_id=user_id, source=SOURCE)
        except Forbidden as error:  # audited as refused by the admin service
            await tell_user(client=client, body=body, text=f":no_entry: {_sentence(error)}")
            return
        except TuneloopError as error:  # audited as failed by the admin service
            await tell_user(client=client, body=body, text=f":x: {_sentence(error)}")
            return
        note = f":leftwards_arrow_with_hook: {views.who(user_id)} rolled back to `{adapter.version}`."
        await _replace_button(client, body, note=note)

    app.action(views.ADMIN_ROLLBACK)(roll_back)


def _sentence(error: TuneloopError) -> str:
    return views.failure_text(message=error.message, hint=error.hint, ref=None)


async def _replace_button(client: AsyncWebClient, body: dict[str, Any], *, note: str) -> None:
    message = body.get("message") or {}
    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
    ts = (body.get("container") or {}).get("message_ts") or message.get("ts")
    if not channel or not ts:
        return
    try:
        await client.chat_update(
            channel=channel,
            ts=ts,
            text=str(message.get("text") or note),
            blocks=views.rolled_back_blocks(message.get("blocks") or [], note=note),
        )
    except SlackApiError as error:
        # The rollback is done and audited; the channel also gets its own message about it.
        log.warning("slack.rollback_message_not_updated channel=%s ts=%s error=%s", channel, ts, error)
